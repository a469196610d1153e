"""The context window on loopback: the window each local server says it serves (probed once per
model), and each server's context overflow made a ContextWindowError with its figures."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from fake_openai import FakeOpenAI, Reply
from servers import EndlessServer

from agent_nb import Agent
from agent_nb.errors import BadRequestError, ContextWindowError
from agent_nb.providers.anthropic import AnthropicProvider
from agent_nb.providers.openai import (
    OllamaProvider,
    OpenAICompatibleProvider,
    OpenAIProvider,
)
from agent_nb.providers.openai_responses import OpenAIResponsesProvider

#: What llama.cpp's llama-server answers to GET /props (abridged), started with --ctx-size 512.
PROPS = {
    "default_generation_settings": {"params": {"n_predict": -1}, "n_ctx": 512},
    "total_slots": 1,
    "model_alias": "tiny",
    "modalities": {"vision": False, "audio": False},
}


# -- the window a server says it serves ------------------------------------------------------


async def test_llama_cpp_says_its_window_in_props_asked_once_with_vision(server):
    server.props = PROPS
    provider = OpenAICompatibleProvider(base_url=server.url)
    assert await provider.context_window("tiny") == 512
    assert await provider.context_window("tiny") == 512
    assert await provider.takes_images("tiny") is False  # the same answer: no second GET
    assert server.probes == [("GET", "/props", None)]
    await provider.aclose()


async def test_vllm_says_its_window_in_its_model_list(server):
    server.models = {
        "object": "list",
        "data": [
            {"id": "other", "object": "model", "max_model_len": 999},
            {
                "id": "Qwen/Qwen3-8B",
                "object": "model",
                "root": "Qwen/Qwen3-8B",
                "max_model_len": 8192,
            },
        ],
    }
    provider = OpenAICompatibleProvider(base_url=server.url)
    assert await provider.context_window("Qwen/Qwen3-8B") == 8192
    assert await provider.context_window("Qwen/Qwen3-8B") == 8192
    assert server.probes == [("GET", "/props", None), ("GET", "/v1/models", None)]
    assert await provider.context_window("other") == 999
    await provider.aclose()


async def test_llama_cpp_model_list_meta_serves_when_props_has_no_window(server):
    server.props = {"default_generation_settings": {"n_ctx": 0}, "role": "router"}
    server.models = {"data": [{"id": "tiny", "meta": {"n_ctx": 2048, "n_ctx_train": 4096}}]}
    provider = OpenAICompatibleProvider(base_url=server.url)
    assert await provider.context_window("tiny") == 2048
    await provider.aclose()


async def test_lm_studio_says_the_window_it_loaded_the_model_with(server):
    server.models = {"data": [{"id": "qwen/qwen3-8b", "object": "model", "owned_by": "x"}]}
    server.lmstudio = {
        "qwen/qwen3-8b": {
            "id": "qwen/qwen3-8b",
            "state": "loaded",
            "max_context_length": 32768,
            "loaded_context_length": 4096,
        }
    }
    provider = OpenAICompatibleProvider(base_url=server.url)
    assert await provider.context_window("qwen/qwen3-8b") == 4096
    assert server.probes[-1] == ("GET", "/api/v0/models/qwen%2Fqwen3-8b", None)
    await provider.aclose()


async def test_a_server_that_says_no_window_is_asked_once(server):
    provider = OpenAICompatibleProvider(base_url=server.url)
    assert await provider.context_window("m") is None
    asked = list(server.probes)
    assert [path for _, path, _ in asked] == ["/props", "/v1/models", "/api/v0/models/m"]
    assert await provider.context_window("m") is None
    assert server.probes == asked
    await provider.aclose()


async def test_ollama_says_the_window_of_a_loaded_model_in_api_ps(server):
    server.ps = {
        "models": [
            {"name": "qwen3:8b", "model": "qwen3:8b", "context_length": 16384},
            {"name": "llama3.2:latest", "model": "llama3.2:latest", "context_length": 4096},
        ]
    }
    provider = OllamaProvider(base_url=server.url)
    assert await provider.context_window("llama3.2") == 4096  # the :latest tag is implied
    assert await provider.context_window("llama3.2") == 4096
    assert server.probes == [("GET", "/api/ps", None)]
    assert await provider.context_window("qwen3:8b") == 16384
    await provider.aclose()


async def test_ollama_before_the_model_is_loaded_reads_the_modelfile_and_asks_again(server):
    server.ps = {"models": []}
    server.show = {
        "parameters": f'{"num_ctx":<30} 8192\n{"stop":<30} "<|eot|>"',
        "model_info": {"llama.context_length": 131072},  # trained, not served: never the window
    }
    provider = OllamaProvider(base_url=server.url)
    assert await provider.context_window("llama3.2") == 8192
    assert server.probes == [("GET", "/api/ps", None), ("POST", "/api/show", {"model": "llama3.2"})]
    server.ps = {"models": [{"name": "llama3.2:latest", "context_length": 8192}]}
    assert await provider.context_window("llama3.2") == 8192  # asked again: now loaded, kept
    assert await provider.context_window("llama3.2") == 8192
    assert len(server.probes) == 3
    await provider.aclose()


async def test_ollama_that_says_nothing_is_not_kept(server):
    server.show = {"parameters": 'stop "<|eot|>"', "model_info": {"llama.context_length": 131072}}
    provider = OllamaProvider(base_url=server.url)
    assert await provider.context_window("llama3.2") is None
    assert await provider.context_window("llama3.2") is None
    assert await provider.takes_images("llama3.2") is None  # /api/show is asked once for both
    assert [path for _, path, _ in server.probes] == ["/api/ps", "/api/show", "/api/ps"]
    await provider.aclose()


async def test_official_services_are_not_probed():
    """Their windows are in genai-prices' table: only another server is asked."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=PROPS)

    transport = httpx.MockTransport(answer)
    for provider in (
        OpenAIProvider(api_key="sk-test", transport=transport),
        OpenAIResponsesProvider(api_key="sk-test", transport=transport),
        AnthropicProvider(api_key="sk-test", transport=transport),
    ):
        assert await provider.context_window("gpt-4o") is None
        await provider.aclose()
    assert seen == []
    local = OpenAIProvider(base_url="http://127.0.0.1:8080/v1", transport=transport)
    assert await local.context_window("gpt-4o") == 512
    assert [str(request.url) for request in seen] == ["http://127.0.0.1:8080/props"]
    await local.aclose()


HOSTILE_WINDOWS = [True, -512, 0, "512", 512.0, 10**12, None, [512], {"n_ctx": 512}]


@pytest.mark.parametrize("n_ctx", HOSTILE_WINDOWS)
async def test_a_hostile_llama_cpp_window_is_none(server, n_ctx):
    server.props = {"default_generation_settings": {"n_ctx": n_ctx}}
    provider = OpenAICompatibleProvider(base_url=server.url)
    assert await provider.context_window("tiny") is None
    assert ("GET", "/props", None) in server.probes
    await provider.aclose()


@pytest.mark.parametrize("window", HOSTILE_WINDOWS)
async def test_a_hostile_window_from_vllm_lm_studio_or_ollama_is_none(server, window):
    server.models = {"data": [{"id": "m", "max_model_len": window}]}
    server.lmstudio = {"m": {"loaded_context_length": window}}
    server.ps = {"models": [{"name": "m:latest", "context_length": window}]}
    server.show = {"parameters": f"num_ctx {json.dumps(window)}"}
    provider = OpenAICompatibleProvider(base_url=server.url)
    assert await provider.context_window("m") is None
    ollama = OllamaProvider(base_url=server.url)
    assert await ollama.context_window("m") is None
    assert [path for _, path, _ in server.probes] == [
        "/props",
        "/v1/models",
        "/api/v0/models/m",
        "/api/ps",
        "/api/show",
    ]
    await provider.aclose()
    await ollama.aclose()


@pytest.mark.parametrize(
    "answer",
    [
        ["default_generation_settings"],
        "n_ctx",
        {"default_generation_settings": [512]},
        b"[" * 100_000,  # nested past what Python's JSON can hold
        b'{"default_generation_settings": {"n_ctx": 512}, "modalities": {"vision": false}, '
        b'"pad": "' + b"x" * 5_000_000 + b'"}',  # past what a probe reads
        b'{"default_generation_settings": {"n_ctx": 512}',  # cut short
        b"\xff\xfe not json",
    ],
)
async def test_a_hostile_props_answer_is_no_window_never_an_error(server, answer):
    server.props = answer
    server.models = {"data": "tiny"} if isinstance(answer, bytes) else [answer]
    provider = OpenAICompatibleProvider(base_url=server.url)
    assert await provider.context_window("tiny") is None
    assert await provider.takes_images("tiny") is None
    asked = ["/props", "/v1/models"] + ([] if type(answer) is dict else ["/api/v0/models/tiny"])
    assert [path for _, path, _ in server.probes] == asked
    await provider.aclose()


async def test_a_server_that_drips_its_answer_is_given_up_on(monkeypatch):
    """A probe has a deadline in all, not only for each read: a server that sends a byte now
    and then, never finishing, costs a turn that much and no more."""
    monkeypatch.setattr("agent_nb.providers._transport._PROBE_DEADLINE", 0.2)
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n"
    head += b'{"default_generation_settings": {"n_ctx": 512}, "pad": "'
    with EndlessServer(head, b"x", pause=0.02) as dripping:
        provider = OpenAICompatibleProvider(base_url=dripping.url)
        assert await asyncio.wait_for(provider.takes_images("tiny"), 30) is None  # old: forever
        assert await asyncio.wait_for(provider.context_window("tiny"), 30) is None
        await provider.aclose()


async def test_a_probe_keeps_to_a_shorter_timeout_of_the_provider():
    """A server that never answers its probes cost a first turn 5 s a probe (three of them
    on a server that says nothing), whatever the provider's timeout=: Agent(timeout=0.5)
    waited 15.7 s before its request. A shorter timeout holds for probes too."""
    timeouts = []

    def answer(request: httpx.Request) -> httpx.Response:
        timeouts.append(request.extensions["timeout"])
        return httpx.Response(404)

    transport = httpx.MockTransport(answer)
    brief = OpenAICompatibleProvider(
        base_url="http://127.0.0.1:9/v1", timeout=0.5, transport=transport
    )
    assert await brief.context_window("m") is None
    assert len(timeouts) == 3 and all(t["read"] == 0.5 for t in timeouts)  # old: 5.0
    patient = OpenAICompatibleProvider(
        base_url="http://127.0.0.1:9/v1", timeout=60, transport=transport
    )
    assert await patient.context_window("m") is None
    assert all(t["read"] == 5.0 for t in timeouts[3:])  # a probe only informs: 5 s at most
    await brief.aclose()
    await patient.aclose()


async def test_a_probe_never_goes_to_another_origin(server):
    with FakeOpenAI() as other:
        other.props = PROPS
        provider = OpenAICompatibleProvider(base_url=server.url, api_key="sk-secret-key")
        elsewhere = other.url.removesuffix("/v1") + "/props"
        assert await provider._http.probe("GET", elsewhere) is None
        assert other.probes == []
        server.props = PROPS  # the server's own origin is asked, with its key
        assert await provider._http.probe("GET", server.url.removesuffix("/v1") + "/props")
        assert server.probes == [("GET", "/props", None)]
        await provider.aclose()


# -- a server's overflow ----------------------------------------------------------------------

OPENAI_OVERFLOW = {
    "error": {
        "message": "This model's maximum context length is 128000 tokens. However, your "
        "messages resulted in 130532 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}
ANTHROPIC_OVERFLOW = {
    "type": "error",
    "error": {
        "type": "invalid_request_error",
        "message": "prompt is too long: 208310 tokens > 200000 maximum",
    },
}
LLAMA_CPP_OVERFLOW = {
    "error": {
        "code": 400,
        "message": "request (600 tokens) exceeds the available context size (512 tokens), "
        "try increasing it",
        "type": "exceed_context_size_error",
        "n_prompt_tokens": 600,
        "n_ctx": 512,
    }
}
VLLM_OVERFLOW = {
    "object": "error",
    "message": "This model's maximum context length is 4096 tokens. However, you requested "
    "5000 tokens (4000 in the messages, 1000 in the completion). Please reduce the length of "
    "the messages or completion.",
    "type": "BadRequestError",
    "param": None,
    "code": 400,
}
VLLM_NEWER_OVERFLOW = {
    "error": {
        "message": "This model's maximum context length is 8192 tokens. However, you requested "
        "4096 output tokens and your prompt contains at least 4097 input tokens, for a total of "
        "at least 8193 tokens. Please reduce the length of the input prompt or the number of "
        "requested output tokens. (parameter=input_tokens, value=4097)",
        "type": "BadRequestError",
        "param": "input_tokens",
        "code": 400,
    }
}
VLLM_PARTS_OVERFLOW = {
    "error": {
        "message": "This model's maximum context length is 8192 tokens. However, you requested "
        "4096 output tokens and your prompt contains at least 4097 input tokens.",
        "type": "BadRequestError",
        "code": 400,
    }
}
VLLM_ENGINE_OVERFLOW = {
    "error": {
        "message": "The decoder prompt (length 17772) is longer than the maximum model length "
        "of 16384. Make sure that `max_model_len` is no smaller than the number of text tokens.",
        "type": "BadRequestError",
        "code": 400,
    }
}
LLAMA_CPP_PYTHON_OVERFLOW = {  # its own words, when its error formatter did not run
    "error": {
        "message": "Requested tokens (600) exceed context window of 512",
        "type": "internal_server_error",
        "param": None,
        "code": None,
    }
}
OLLAMA_OVERFLOW = {
    "error": {
        "message": "the prompt is longer than the context length currently available to the "
        "model; shorten the prompt, adjust the context length in settings, or use a model with "
        "a longer context length",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
}
LM_STUDIO_OVERFLOW = {
    "error": "Trying to keep the first 5360 tokens when context the overflows. However, the "
    "model is loaded with context length of only 4096 tokens, which is not enough. Try to load "
    "the model with a larger context length, or provide a shorter input"
}


def openai_agent(server, **kwargs) -> Agent:
    return Agent(provider="openai", model="m", base_url=server.url, api_key="k", **kwargs)


def anthropic_agent(server, **kwargs) -> Agent:
    base_url = server.url.removesuffix("/v1")
    return Agent(provider="anthropic", model="claude", base_url=base_url, api_key="k", **kwargs)


@pytest.mark.parametrize(
    ("make", "status", "body", "window", "needed"),
    [
        (openai_agent, 400, OPENAI_OVERFLOW, 128000, 130532),
        (anthropic_agent, 400, ANTHROPIC_OVERFLOW, 200000, 208310),
        (anthropic_agent, 413, ANTHROPIC_OVERFLOW, 200000, 208310),
        (openai_agent, 400, LLAMA_CPP_OVERFLOW, 512, 600),
        (openai_agent, 400, VLLM_OVERFLOW, 4096, 5000),
        (openai_agent, 400, VLLM_NEWER_OVERFLOW, 8192, 8193),
        (openai_agent, 400, VLLM_PARTS_OVERFLOW, 8192, 8193),
        (openai_agent, 400, VLLM_ENGINE_OVERFLOW, 16384, 17772),
        (openai_agent, 500, LLAMA_CPP_PYTHON_OVERFLOW, 512, 600),
        (openai_agent, 400, OLLAMA_OVERFLOW, None, None),
        (openai_agent, 400, LM_STUDIO_OVERFLOW, 4096, 5360),
    ],
    ids=[
        "openai",
        "anthropic",
        "anthropic-413",
        "llama.cpp",
        "vllm",
        "vllm-newer",
        "vllm-parts",
        "vllm-engine",
        "llama-cpp-python-500",
        "ollama",
        "lm-studio",
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_a_servers_overflow_is_a_context_window_error(
    server, make, status, body, window, needed, stream
):
    server.script(Reply(status=status, error=body))
    session = make(server, max_retries=2).session()
    with pytest.raises(ContextWindowError) as caught:
        if stream:
            list(session.stream("hello"))
        else:
            session.run("hello")
    error = caught.value
    assert isinstance(error, BadRequestError)  # `except BadRequestError` still catches it
    assert (error.window, error.needed, error.status) == (window, needed, status)
    said = str(error)
    assert 'context="trim"' in said and 'context="summarize"' in said
    assert "larger window" in said and (window is None or f"{window:,} tokens" in said)
    assert len(server.requests) == 1  # never retried, a 500 among them
    assert session.messages == []


@pytest.mark.parametrize(
    "body",
    [
        {
            "error": {
                "message": "Unsupported parameter: 'max_tokens' is not supported with this "
                "model. Use 'max_completion_tokens' instead.",
                "type": "invalid_request_error",
                "param": "max_tokens",
                "code": "unsupported_parameter",
            }
        },
        {
            "error": {
                "message": "max_tokens is too large: 100000. This model supports at most 16384 "
                "completion tokens, whereas you provided 100000.",
                "type": "invalid_request_error",
                "code": "invalid_value",
            }
        },
        {"error": {"message": "context: bad value", "type": "invalid_request_error"}},
    ],
)
def test_only_a_400_about_the_window_is_a_context_window_error(server, body):
    server.script(Reply(status=400, error=body), Reply(status=400, error=OPENAI_OVERFLOW))
    session = openai_agent(server).session()
    with pytest.raises(BadRequestError) as caught:
        session.run("hello")
    assert type(caught.value) is BadRequestError
    with pytest.raises(ContextWindowError):
        session.run("hello")


def test_an_overflow_inside_a_stream_is_a_context_window_error(server):
    server.script(Reply(raw=f"data: {json.dumps(OPENAI_OVERFLOW)}\n\n"))
    with pytest.raises(ContextWindowError) as caught:
        list(openai_agent(server).session().stream("hello"))
    assert (caught.value.window, caught.value.needed) == (128000, 130532)


def test_a_failed_response_over_the_window_is_a_context_window_error(server):
    failed = {
        "type": "response.failed",
        "response": {
            "id": "resp_1",
            "status": "failed",
            "model": "gpt-4o",
            "output": [],
            "error": {
                "code": "context_length_exceeded",
                "message": "Your input exceeds the context window of this model. Please adjust "
                "your input and try again.",
            },
            "usage": {"input_tokens": 0, "output_tokens": 0},
        },
    }
    server.script(Reply(raw=f"event: response.failed\ndata: {json.dumps(failed)}\n\n"))
    agent = Agent(provider="openai-responses", model="gpt-4o", base_url=server.url, api_key="k")
    with pytest.raises(ContextWindowError, match="exceeds the context window") as caught:
        list(agent.session().stream("hello"))
    assert caught.value.window is None and caught.value.code == "context_length_exceeded"


def test_hostile_figures_in_an_overflow_are_not_believed(server):
    body = {
        "error": {
            "message": f"This model's maximum context length is {'9' * 5000} tokens. However, "
            "your messages resulted in -3 tokens.",
            "code": "context_length_exceeded",
            "n_ctx": True,
            "n_prompt_tokens": 10**15,
        }
    }
    server.script(Reply(status=400, error=body))
    with pytest.raises(ContextWindowError) as caught:
        openai_agent(server).session().run("hello")
    assert (caught.value.window, caught.value.needed) == (None, None)
