"""What a %%chat cell sends (braces, --raw) and the short messages it and %session print."""

from __future__ import annotations

import nbformat
import pytest
from kernels import Kernel, chat_kernel, run_notebook, text_of

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(180)]


def sent(server) -> str:
    """The text of the last user message the model received."""
    return server.requests[-1]["messages"][-1]["content"]


def test_only_names_that_exist_are_filled_in_and_other_braces_stay_as_typed(server):
    with chat_kernel(server) as kernel:
        kernel.execute("name = 'Bob'")
        kernel.execute("21 * 2")
        kernel.execute("class Place:\n    city = 'Lyon'\nhome = Place()")
        typed = (
            "I am {name} of {home.city}; {Out[3]} from {In[2]}.\n"
            "Why does df.agg({'b': 'sum'}) fail? {\"a\": [1, {\"b\": null}]}\n"
            'f"{value!r:>10}" {{name}} {undefined} {home.nope} {Out[99]} {In[x]} {} {1}'
        )
        ran = kernel.execute("%%chat\n" + typed)
        assert ran.error is None and ran.stdout == ""
        assert sent(server) == (
            "I am Bob of Lyon; 42 from name = 'Bob'.\n"
            "Why does df.agg({'b': 'sum'}) fail? {\"a\": [1, {\"b\": null}]}\n"
            'f"{value!r:>10}" {name} {undefined} {home.nope} {Out[99]} {In[x]} {} {1}'
        )
        raw = kernel.execute("%%chat --raw\n{name} and {{name}}")
        assert raw.error is None and sent(server) == "{name} and {{name}}"
        typo = kernel.execute("%%chat\nHello {nmae}")
        assert typo.error is None and sent(server) == "Hello {nmae}"
        assert typo.stdout == (
            "agent_nb: {nmae} is left as typed: no such name; did you mean {name}?\n"
        )


def test_unknown_options_list_the_valid_ones():
    nb = run_notebook("%load_ext agent_nb", "%%chat --unknown-flag\nhi", "%%chat -m\nhi")
    for cell, problem in ((1, "unrecognized arguments: --unknown-flag"), (2, "-m/--model")):
        error = next(o for o in nb.cells[cell].outputs if o.output_type == "error")
        assert error.ename == "ChatError" and problem in error.evalue
        assert "usage: %%chat [SESSION] [options]" in error.evalue
        assert "-m/--model MODEL" in error.evalue and "--raw" in error.evalue
    assert not any(o.get("name") == "stderr" for o in nb.cells[1].outputs)


def test_the_offline_notice_is_one_line_on_stdout_when_a_turn_uses_it():
    nb = run_notebook(
        "%load_ext agent_nb",
        "%session list",
        "%%chat\nhi",
        "%%chat\nagain",
    )
    assert text_of(nb.cells[1]) == "no sessions yet: %%chat makes one\n"
    notice = [o for o in nb.cells[2].outputs if o.output_type == "stream"]
    assert [o.name for o in notice] == ["stdout"] and notice[0].text.count("\n") == 1
    assert "offline 'test' provider" in notice[0].text and len(notice[0].text) <= 100
    assert text_of(nb.cells[3]) == ""  # once
    configured = run_notebook("%load_ext agent_nb", "%agent provider=test", "%%chat\nhi")
    assert text_of(configured.cells[2]) == ""  # %agent came first: no notice


def test_load_ext_is_quiet_when_there_is_nothing_to_restore(tmp_path, monkeypatch):
    path = tmp_path / "empty.ipynb"
    nbformat.write(run_notebook("%load_ext agent_nb", "1 + 1"), str(path))
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    with Kernel() as kernel:
        loaded = kernel.execute("%load_ext agent_nb")
        assert loaded.stdout == "" and loaded.stderr == "" and loaded.error is None
        restored = kernel.execute(f"%session restore {path}")
        assert "restored 0 turns in 0 sessions" in restored.stdout  # asked for: it answers


def test_empty_sessions_say_so():
    nb = run_notebook(
        "%load_ext agent_nb",
        "%session new scratch --system Be terse.",
        "%session show",
        "%session history",
    )
    show = [o for o in nb.cells[2].outputs if o.output_type == "display_data"]
    assert show[-1].data["text/plain"] == "no messages yet in session 'scratch' (system: Be terse.)"
    history = [o for o in nb.cells[3].outputs if o.output_type == "display_data"]
    assert history[-1].data["text/plain"] == "no messages yet in session 'scratch'"


def test_quoted_options_lose_their_quotes_and_an_open_quote_is_named(server):
    with chat_kernel(server) as kernel:
        ran = kernel.execute('%%chat --system "Be terse, don\'t ramble."\nhi')
        assert ran.error is None
        assert server.requests[-1]["messages"][0] == {
            "role": "system",
            "content": "Be terse, don't ramble.",
        }
        before = len(server.requests)
        open_quote = kernel.execute("%%chat --system Don't\nhi")
        assert open_quote.error["evalue"] == (
            "%%chat --system Don't: No closing quotation; close the quote"
        )
        assert len(server.requests) == before


def test_a_fill_never_follows_private_attributes_so_no_saved_file_holds_the_key(
    server, tmp_path, monkeypatch
):
    """A shared notebook's `{agent.provider.__dict__}` would send the API key and save it:
    private and dunder attributes are left as typed, and the saved .ipynb (and an export)
    hold no key anywhere."""
    key = "sk-private-4f1c9e7d2b"
    monkeypatch.setenv("OPENAI_API_KEY", key)  # the kernel's environment: no cell holds it
    export = tmp_path / "export.ipynb"
    nb = run_notebook(
        "%load_ext agent_nb",
        "from agent_nb import Agent\n"
        f"agent = Agent(provider='openai', model='m', base_url={server.url!r})",
        "%agent agent",
        "%%chat\nSee {agent.provider.__dict__} and {agent.provider._api_key}",
        "%%chat\n{agent.__dict__} {agent.provider._http.headers} {__builtins__}",
        "%%chat\n{agent.provider} {agent.model} {agent.provider.base_url}",
        "%session history",
        "%session show",
        f"%session export {export}",
    )
    saved = tmp_path / "shared.ipynb"
    nbformat.write(nb, saved)
    assert key not in saved.read_text() and key not in export.read_text()
    assert "{agent.provider.__dict__}" in sent_texts(server)[0]
    assert "{agent.provider._api_key}" in sent_texts(server)[0]
    assert "private attributes (_name)" in text_of(nb.cells[3])
    assert "{agent.model}" not in sent_texts(server)[2]  # public ones are filled in


def sent_texts(server) -> list[str]:
    return [r["messages"][-1]["content"] for r in server.requests]
