"""The context window against real llama.cpp servers started with a 512-token window: llama.cpp's
own `llama-server` (its /props says the window; its overflow error gives n_ctx) and
llama-cpp-python's server (no /props; its overflow error in OpenAI's words).

Both run `tests/llama_model.py`'s tiny model: a byte-level vocabulary, so "word " is about 5
tokens, and every answer runs to `max_tokens` (or to the window).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agent_nb import Agent
from agent_nb.errors import BadRequestError, ContextWindowError
from agent_nb.providers.openai import OpenAICompatibleProvider

#: Far more than 512 tokens.
TOO_LONG = "word " * 200
#: About 490 tokens with the chat template: it fits, with little room left to answer.
NEARLY_FULL = "word " * 95


def agent(server: Any, **settings: Any) -> Agent:
    """Agent(...) on the openai provider, pointed at the server as its docs say."""
    options = {"temperature": 0.0, "max_tokens": 8, **settings}
    return Agent(provider="openai", model="tiny", base_url=server.url, api_key="none", **options)


async def test_context_window_is_the_window_llama_server_loaded(llama_cpp_server):
    provider = OpenAICompatibleProvider(base_url=llama_cpp_server.url)
    assert await provider.context_window("tiny") == llama_cpp_server.n_ctx == 512
    assert await provider.takes_images("tiny") is False  # the same /props answer
    await provider.aclose()
    on_openai = agent(llama_cpp_server).provider
    assert await on_openai.context_window("tiny") == 512  # provider="openai", base_url=...


@pytest.mark.parametrize("stream", [False, True])
def test_llama_server_refuses_a_prompt_past_its_window(llama_cpp_server, stream):
    """llama-server never truncates the prompt: a prompt past the window is a 400 naming the
    window (n_ctx) and the prompt's tokens (n_prompt_tokens), stream or not."""
    session = agent(llama_cpp_server).session()
    with pytest.raises(ContextWindowError) as caught:
        if stream:
            list(session.stream(TOO_LONG))
        else:
            session.run(TOO_LONG)
    error = caught.value
    assert isinstance(error, BadRequestError) and error.status == 400
    assert error.window == 512 and error.needed is not None and error.needed > 512
    assert "exceeds the available context size (512 tokens)" in str(error)
    assert 'context="trim"' in str(error)
    assert session.messages == []
    assert session.run("shorter").text  # the server, and the session, go on


def test_llama_server_cuts_the_answer_at_the_window_not_the_prompt(llama_cpp_server):
    """What the core's truncation check sees: the prompt counted whole, the answer cut where
    prompt and answer fill the window, finished as "length"."""
    session = agent(llama_cpp_server, max_tokens=200).session()
    response = session.run(NEARLY_FULL)
    usage = response.usage
    assert 400 < usage.input_tokens < 512
    assert usage.input_tokens + usage.output_tokens == 512
    assert response.finish_reason == "length"
    with pytest.raises(ContextWindowError) as caught:
        session.run(NEARLY_FULL)  # the history and this turn no longer fit
    assert caught.value.window == 512
    assert caught.value.needed > usage.input_tokens + usage.output_tokens


@pytest.fixture(scope="module")
def small_llama_cpp_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """llama-cpp-python's server with a 512-token window."""
    from servers import LlamaServer, llama_serving

    yield from llama_serving(tmp_path_factory, LlamaServer, n_ctx=512)


async def test_llama_cpp_python_overflow_names_its_window(small_llama_cpp_python):
    session = agent(small_llama_cpp_python).session()
    with pytest.raises(ContextWindowError) as caught:
        session.run(TOO_LONG)
    error = caught.value
    assert error.status == 400 and error.code == "context_length_exceeded"
    assert error.window == 512 and error.needed is not None and error.needed > 512
    assert session.messages == []
    # it has no /props, and its model list no window: unknown says unknown
    provider = OpenAICompatibleProvider(base_url=small_llama_cpp_python.url)
    assert await provider.context_window("tiny") is None
    await provider.aclose()
