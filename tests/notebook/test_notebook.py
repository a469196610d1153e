"""%load_ext agent_nb in real kernels: %%chat streams, remembers, survives a restart."""

from __future__ import annotations

import json
import re

import nbformat
import pytest
from fake_openai import Reply
from kernels import Kernel, LabClient, chat_kernel, run_notebook, text_of

from agent_nb._format import FORMAT_VERSION
from agent_nb._render import CLOSE, OPEN, html
from agent_nb.notebook.live import PART_END

pytestmark = pytest.mark.timeout(180)


def displays(cell) -> list[dict]:
    return [o for o in cell.outputs if o.output_type in ("display_data", "execute_result")]


def record(cell) -> dict:
    found = [o.metadata["agent_nb"] for o in cell.outputs if "agent_nb" in o.get("metadata", {})]
    assert len(found) == 1, cell.outputs
    return found[0]


@pytest.mark.kernel
def test_chat_answers_remembers_and_records_each_turn():
    nb = run_notebook(
        "%load_ext agent_nb",
        "%%chat\nMy name is Alice",
        "%%chat\nWhat is my name?",
    )
    assert "offline 'test' provider" in "".join(
        o.get("text", "") for o in nb.cells[1].outputs if o.output_type == "stream"
    )
    answer = displays(nb.cells[2])[-1]
    shown = answer.data["text/html"]
    assert "text/markdown" not in answer.data
    assert "Earlier you told me: “My name is Alice”" in shown
    assert "<sub><code>test</code>" in shown and "out tokens" in shown  # the footer
    first, second = record(nb.cells[1]), record(nb.cells[2])
    assert first["op"] == second["op"] == "turn" and first["session_id"] == "main"
    assert [m["role"] for m in second["messages"]] == ["user", "assistant"]
    assert second["messages"][0]["parts"][0]["text"] == "What is my name?"
    nbformat.validate(nb)


@pytest.mark.kernel
def test_interpolation_and_output_variables():
    nb = run_notebook(
        "%load_ext agent_nb",
        "name = 'Bob'\n21 * 2",
        "%%chat -o reply\nI am {name}; the answer was {Out[2]}; code: {{'a': 1}}; cell: {In[2]}",
        "print(reply.text == _.text, reply.messages[0].text)",
    )
    printed = text_of(nb.cells[3])
    assert printed.startswith(
        "True I am Bob; the answer was 42; code: {{'a': 1}}; cell: name = 'Bob'"
    )


@pytest.mark.kernel
def test_model_output_is_sanitized():
    nb = run_notebook(
        "%load_ext agent_nb",
        "%%chat\nShow <script>alert(1)</script> <img src=x onerror=alert(2)> "
        "[x](javascript:alert(3)) and `<b>code</b>`",
    )
    shown = displays(nb.cells[1])[-1].data["text/html"]
    assert "<script>" not in shown and "&lt;script&gt;" in shown
    assert "<img" not in shown and 'href="javascript:' not in shown
    assert "<code>&lt;b&gt;code&lt;/b&gt;</code>" in shown


@pytest.mark.kernel
def test_errors_are_short_and_leave_history_unchanged(server):
    server.script(Reply(status=500, error={"error": {"message": "upstream exploded"}}))
    nb = run_notebook(
        "%load_ext agent_nb",
        f"%agent provider=openai model=gpt-4o base_url={server.url} api_key=k max_retries=0",
        "%%chat\nhello",
        "%%chat\nagain",
        "%session info",
    )
    error = next(o for o in nb.cells[2].outputs if o.output_type == "error")
    assert "upstream exploded" in error.evalue and "unchanged" in error.evalue
    assert len(error.traceback) == 1
    assert "messages: 2" in text_of(nb.cells[4])  # only the turn that worked
    assert "k" not in text_of(nb.cells[1]).split("base_url")[0]  # %agent never shows the key
    assert "api_key" not in text_of(nb.cells[1])


@pytest.mark.kernel
def test_a_failed_turns_system_prompt_is_not_kept(server):
    server.script(
        Reply(status=500, error={"error": {"message": "upstream exploded"}}),
        Reply(text="hi"),
        Reply(text="brief"),
        Reply(text="still brief"),
    )
    nb = run_notebook(
        "%load_ext agent_nb",
        f"%agent provider=openai model=gpt-4o base_url={server.url} api_key=k max_retries=0",
        "%%chat --system 'Be terse.'\nhello",
        "%%chat\nhello",
        "%%chat --system 'Be brief.'\nagain",
        "%%chat\nand again",
        allow_errors=True,
    )
    assert any(o.output_type == "error" for o in nb.cells[2].outputs)
    first, second, third = (r["messages"] for r in server.requests[1:])
    assert [m["role"] for m in first] == ["user"]  # the failed turn's --system went with it
    assert second[0] == {"role": "system", "content": "Be brief."}  # a turn that worked keeps it
    assert third[0] == {"role": "system", "content": "Be brief."}


@pytest.mark.kernel
def test_tool_calls_show_as_collapsible_blocks():
    nb = run_notebook(
        "%load_ext agent_nb",
        "from agent_nb import Agent, tool\n"
        "@tool\n"
        "def get_weather(city: str) -> str:\n"
        "    '''Weather for a city.'''\n"
        "    return f'sunny in {city}'\n"
        "\n"
        "weather_agent = Agent(provider='test', tools=[get_weather])",
        "%agent weather_agent",
        "%%chat\nWhat is the weather in Paris?",
    )
    assert "tools: get_weather" in text_of(nb.cells[2])
    shown = displays(nb.cells[3])[-1].data["text/html"]
    assert '<details><summary>🔧 <code>get_weather({"city": "Paris"})</code></summary>' in shown
    assert "sunny in Paris" in shown
    assert [m["role"] for m in record(nb.cells[3])["messages"]] == [
        "user",
        "assistant",
        "tool",
        "assistant",
    ]


@pytest.mark.kernel
def test_retry_in_a_session_with_its_own_tools_keeps_them():
    """`%session retry` answers on a copy: the copy has the session's own tools, not the
    agent's (it had none, so the retried answer called no tool)."""
    nb = run_notebook(
        "%load_ext agent_nb",
        "from agent_nb import Agent, ChatPanel, tool\n"
        "@tool\n"
        "def get_weather(city: str) -> str:\n"
        "    '''Weather for a city.'''\n"
        "    return f'sunny in {city}'\n"
        "\n"
        "session = Agent(provider='test').session('weather', tools=[get_weather])\n"
        "panel = ChatPanel(session)",
        "%%chat weather\nWhat is the weather in Paris?",
        "%session retry",
        "print([m.role for m in session.messages], session.messages[-1].text)",
    )
    roles = ["user", "assistant", "tool", "assistant"]
    assert [m["role"] for m in record(nb.cells[2])["messages"]] == roles
    retried = record(nb.cells[3])
    assert retried["op"] == "retry"
    assert [m["role"] for m in retried["messages"]] == roles
    assert "sunny in Paris" in json.dumps(retried["messages"][2])
    assert text_of(nb.cells[4]).startswith(str(roles))


@pytest.mark.kernel
def test_session_subcommands():
    nb = run_notebook(
        "%load_ext agent_nb",
        "%%chat\nWe plan a trip to Japan",
        "%session fork plan-b",
        "%%chat\nLet's go to Osaka",
        "%session list",
        "%session use main",
        "%%chat\nWhich cities?",
        "%session undo",
        "%session history",
        "%session new scratch --system Be terse.",
        "%session list",
        "%session clear",
        "%session info",
        "%session retry",
        "%session show",
        "%session bogus",
    )
    listed = text_of(nb.cells[4])
    assert "  main  (2 messages)" in listed and "* plan-b  (4 messages)" in listed
    assert "Osaka" not in displays(nb.cells[6])[-1].data["text/html"]
    history = displays(nb.cells[8])[-1].data
    assert history["text/plain"].count("[user]") == 1  # the undo dropped "Which cities?"
    assert history["text/html"].count("[user]") == 1
    assert "* scratch  (0 messages)" in text_of(nb.cells[10])
    assert "messages: 0" in text_of(nb.cells[12])
    retry = next(o for o in nb.cells[13].outputs if o.output_type == "error")
    assert "nothing to retry" in retry.evalue
    bogus = next(o for o in nb.cells[15].outputs if o.output_type == "error")
    assert "unknown subcommand" in bogus.evalue and "fork" in bogus.evalue


@pytest.mark.kernel
def test_restore_after_a_real_kernel_restart(tmp_path, monkeypatch):
    nb = run_notebook(
        "%load_ext agent_nb",
        "%%chat\nMy name is Alice",
        "%%chat\nI live in Lyon",
        "%session fork side",
        "%%chat\nI also like tea",
        "%session use main",
        "%%chat\nI work as an engineer",
    )
    path = tmp_path / "saved.ipynb"
    nbformat.write(nb, str(path))
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))  # how Jupyter tells the kernel its notebook
    with Kernel() as kernel:
        loaded = kernel.execute("%load_ext agent_nb")
        assert "restored 4 turns in 2 sessions" in loaded.stdout
        listed = kernel.execute("%session list").stdout
        assert "* main  (6 messages)" in listed and "  side  (6 messages)" in listed
        answer = kernel.execute("%%chat\nWhat do you know?")
        shown = answer.last_display["data"]["text/html"]
        assert "My name is Alice" in shown and "engineer" in shown
        assert "tea" not in shown


@pytest.mark.kernel
def test_the_stop_button_keeps_the_partial_answer(server):
    server.chunk_delay = 0.1
    server.script(Reply(text=" ".join(f"word{i}" for i in range(60))))
    with chat_kernel(server) as kernel:
        stopped = kernel.execute("%%chat\nTell me a long story", interrupt_after=1.5)
        assert stopped.error["ename"] == "Interrupted"
        assert "partial answer is kept" in stopped.error["evalue"]
        final = stopped.last_display
        assert "<strong>interrupted</strong>" in final["data"]["text/html"]
        assert "kept" not in final["data"]["text/html"]  # said once, by the error's line
        assert "\n" not in stopped.error["evalue"] and len(stopped.error["traceback"]) == 1
        updates = [m["content"]["data"]["text/html"] for m in stopped.of_type("display_data")]
        updates += [
            m["content"]["data"]["text/html"] for m in stopped.of_type("update_display_data")
        ]
        assert any("streaming…" in shown for shown in updates)  # the mark while it streamed
        assert "streaming…" not in final["data"]["text/html"]  # gone at the end
        kept = final["metadata"]["agent_nb"]["messages"]
        assert kept[-1]["metadata"]["interrupted"] is True
        shown_text = final["data"]["text/plain"]
        assert kept[-1]["parts"][0]["text"] == shown_text and shown_text.startswith("word0 ")
        info = kernel.execute("%session info").stdout
        assert "messages: 2" in info
        history = kernel.execute("%session history").shown
        assert "[user] Tell me a long story\n[assistant, interrupted] word0 " in history


@pytest.mark.kernel
def test_live_updates_are_throttled(server):
    server.chunk_delay = 0.005
    server.script(Reply(text=" ".join(f"w{i}" for i in range(400))))
    with chat_kernel(server) as kernel:
        import time

        started = time.monotonic()
        run = kernel.execute("%%chat\ngo")
        seconds = time.monotonic() - started
        updates = len(run.of_type("update_display_data")) + len(run.of_type("display_data"))
        assert run.error is None
        assert 2 <= updates <= seconds * 20 + 2  # at most ~20 a second, plus the final one
        final = run.last_display
        assert final["data"]["text/plain"].endswith("w399")


@pytest.mark.kernel
def test_a_long_answer_ends_as_a_few_outputs_that_render_as_one(server):
    paragraphs = [" ".join(f"p{i}w{j}" for j in range(40)) for i in range(60)]
    paragraphs[10] = "```python\ndef f():\n\n    return '<b>'\n```"
    paragraphs[20] = "<img src=x onerror=alert(1)> and [a](javascript:alert(1))"
    text = "\n\n".join(paragraphs)
    server.chunk_delay = 0.001
    server.script(Reply(text=text))
    nb = run_notebook(
        f"%load_ext agent_nb\n%agent provider=openai model=m base_url={server.url} api_key=k",
        "%%chat\nWrite at length",
    )
    shown = displays(nb.cells[1])
    assert 1 < len(shown) <= 41
    parts = [o.data["text/html"] for o in shown]
    assert all(p.startswith(OPEN) and p.endswith(CLOSE) for p in parts)
    joined = "".join(p.removeprefix(OPEN).removesuffix(CLOSE) for p in parts)
    body, _, footer = joined.replace(PART_END, "").rpartition("<p><sub>")
    assert body == "".join(html(paragraph) for paragraph in paragraphs)
    assert "<img" not in body and 'href="javascript:' not in body
    assert footer.startswith("<code>m</code>")
    assert [o.data.get("text/plain") for o in shown] == [None] * (len(shown) - 1) + [text]
    assert "agent_nb" in shown[-1].metadata and record(nb.cells[1])["op"] == "turn"


@pytest.mark.kernel
def test_unload_removes_the_magics():
    nb = run_notebook("%load_ext agent_nb", "%unload_ext agent_nb", "%%chat\nhello")
    said = "".join(o.get("text", "") for o in nb.cells[2].outputs)
    assert "Cell magic `%%chat` not found" in said


@pytest.mark.kernel
def test_tab_completes_subcommands_and_session_ids():
    with Kernel() as kernel:
        kernel.execute("%load_ext agent_nb\n%session new alpha\n%session new beta")
        assert kernel.complete("%session us") == ["use"]
        assert {"fork", "undo", "export", "restore"} <= set(kernel.complete("%session "))
        assert kernel.complete("%session use al") == ["alpha"]
        assert kernel.complete("%session delete b") == ["beta"]
        assert kernel.complete("%%chat be") == ["beta"]
        kernel.execute("%unload_ext agent_nb")
        assert "alpha" not in kernel.complete("%session use al")


@pytest.mark.kernel
def test_help_reads_like_ipython():
    nb = run_notebook(
        "%load_ext agent_nb",
        "print(get_ipython().find_cell_magic('chat').__doc__)",
        "print(get_ipython().find_line_magic('session').__doc__)",
    )
    assert "--fork NEW_ID" in text_of(nb.cells[1]) and "{In[3]}" in text_of(nb.cells[1])
    assert "%session fork [NEW_ID]" in text_of(nb.cells[2])
    json.dumps(nb)  # serializable as saved


@pytest.mark.kernel
def test_session_save_load_stored_and_export(tmp_path):
    db, exported, shared = tmp_path / "team.db", tmp_path / "out.ipynb", tmp_path / "shared.ipynb"
    nb = run_notebook(
        "%load_ext agent_nb",
        "%%chat\nThe budget is 40k EUR",
        f"%session save {db}",
        f"%session save {shared}",
        f"%session stored {db}",
        "%session new other",
        f"%session load main {db}",
        "%%chat\nWhat is the budget?",
        f"%session export {exported} --code",
        f"%session load nope {db}",
        "%session export nowhere.txt",
    )
    assert f"saved session 'main' (2 messages) to SQLiteStore('{db}')" in text_of(nb.cells[2])
    assert "NotebookStore" in text_of(nb.cells[3])
    assert "main" in text_of(nb.cells[4]) and "The budget is 40k EUR" in text_of(nb.cells[4])
    loaded = record(nb.cells[6])
    assert loaded["op"] == "load" and len(loaded["messages"]) == 2
    assert "40k EUR" in displays(nb.cells[7])[-1].data["text/html"]  # it remembered
    assert "(4 messages)" in text_of(nb.cells[8])
    out = nbformat.read(exported, as_version=4)
    nbformat.validate(out)
    assert len(out.metadata["agent_nb"]["sessions"]["main"]["messages"]) == 4
    errors = [next(o for o in nb.cells[i].outputs if o.output_type == "error") for i in (9, 10)]
    assert "no session 'nope'" in errors[0].evalue and "'main'" in errors[0].evalue
    assert "usage: %session export PATH.ipynb" in errors[1].evalue
    assert nbformat.read(shared, as_version=4).metadata["agent_nb"]["sessions"]["main"]


@pytest.mark.kernel
def test_a_loaded_session_survives_a_restore(tmp_path):
    db = tmp_path / "team.db"
    first = run_notebook("%load_ext agent_nb", "%%chat\nRemember 7", f"%session save {db}")
    assert "saved" in text_of(first.cells[2])
    nb = run_notebook("%load_ext agent_nb", f"%session load main {db}")
    path = tmp_path / "loaded.ipynb"
    nbformat.write(nb, path)
    again = run_notebook("%load_ext agent_nb", f"%session restore {path}", "%session info")
    assert "messages: 2" in text_of(again.cells[2])


@pytest.mark.slow
def test_terminal_ipython_streams_plain_text():
    """In terminal IPython, %%chat prints the answer as it arrives: no Markdown objects."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    code = (
        "%load_ext agent_nb\n"
        "from agent_nb import Agent\n"
        "from agent_nb.providers.testing import TestProvider\n"
        "slow = Agent(provider=TestProvider(delay=0.15), model='m')\n"
        "%agent slow\n"
        "get_ipython().run_cell_magic('chat', '', 'alpha beta gamma delta epsilon zeta')\n"
    )
    ipython = Path(sys.executable).with_name("ipython")
    process = subprocess.Popen(
        [str(ipython), "--no-banner", "--colors=NoColor", "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    arrivals = []  # (seconds, text so far)
    started, seen = time.monotonic(), b""
    while chunk := process.stdout.read1(4096):
        seen += chunk
        arrivals.append((time.monotonic() - started, seen.decode("utf-8", "replace")))
    assert process.wait(30) == 0
    text = seen.decode()
    assert "alpha beta gamma delta epsilon zeta" in text
    assert "<IPython" not in text and "text/markdown" not in text
    first = next(t for t, so_far in arrivals if "You said" in so_far)
    last = next(t for t, so_far in arrivals if "zeta" in so_far.split("You said", 1)[-1])
    assert last - first > 0.5  # the words came one by one, not in one print at the end


# -- %session retry is atomic ------------------------------------------------------------------


def shown_text(cell) -> str:
    """What a cell printed and displayed, as plain text (%session history is HTML + text)."""
    return "".join(
        o.get("text", "") if o.output_type == "stream" else o.get("data", {}).get("text/plain", "")
        for o in cell.outputs
    )


def records_in(cell) -> list[dict]:
    return [o.metadata["agent_nb"] for o in cell.outputs if "agent_nb" in o.get("metadata", {})]


@pytest.mark.kernel
def test_a_failed_retry_keeps_the_last_turn_and_every_record(server, tmp_path, monkeypatch):
    db = tmp_path / "retry.db"
    server.script(
        Reply(text="The first answer"),
        Reply(status=500, error={"error": {"message": "upstream exploded"}}),
        Reply(text="A better answer"),
    )
    nb = run_notebook(
        "%load_ext agent_nb",
        "from agent_nb import Agent\nfrom agent_nb.stores import SQLiteStore\n"
        f"bot = Agent(provider='openai', model='m', base_url='{server.url}', api_key='k', "
        f"max_retries=0, store=SQLiteStore(r'{db}'))",
        "%agent bot",
        "%%chat\nMy name is Alice",
        "%session retry",  # the provider fails
        "%session info\n%session history\n"
        "print('stored:', [m['parts'][0]['text'] for m in bot.store.load('main')['messages']])",
        "%session retry",  # now it answers
        "%session info\n%session history",
    )
    assert records_in(nb.cells[4]) == []  # no undo record, no turn record
    assert "messages: 2" in text_of(nb.cells[5]) and "The first answer" in shown_text(nb.cells[5])
    assert "stored: ['My name is Alice', 'The first answer']" in text_of(nb.cells[5])
    failed = next(o for o in nb.cells[4].outputs if o.output_type == "error")
    assert (
        "upstream exploded" in failed.evalue and "unchanged: its last turn is kept" in failed.evalue
    )
    from agent_nb.stores import SQLiteStore

    # then a retry that works replaces the turn, in the session, the store and the records
    [retried] = records_in(nb.cells[6])
    assert retried["op"] == "retry"
    assert [m["role"] for m in retried["messages"]] == ["user", "assistant"]
    after = shown_text(nb.cells[7])
    assert "messages: 2" in after and "A better answer" in after and "first answer" not in after
    stored = SQLiteStore(db).load("main")["messages"]
    assert [m["parts"][0]["text"] for m in stored] == ["My name is Alice", "A better answer"]

    path = tmp_path / "retried.ipynb"
    nbformat.write(nb, str(path))
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    with Kernel() as kernel:
        loaded = kernel.execute("%load_ext agent_nb")
        assert "restored 2 turns in 1 session" in loaded.stdout and "skipped" not in loaded.stderr
        history = kernel.execute("%session history").shown
        assert history.count("[user]") == 1 and "A better answer" in history


@pytest.mark.kernel
def test_a_retry_cell_run_again_that_fails_keeps_its_earlier_record(server, tmp_path, monkeypatch):
    fail = Reply(status=500, error={"error": {"message": "upstream exploded"}})
    server.script(Reply(text="The first answer"), Reply(text="A better answer"), fail, fail)
    agent = f"%agent provider=openai model=m base_url={server.url} api_key=k max_retries=0"
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(f"%load_ext agent_nb\n{agent}"),
            nbformat.v4.new_code_cell("%%chat\nMy name is Alice"),
            nbformat.v4.new_code_cell("%session retry"),
        ]
    )
    client = LabClient(nb, timeout=60, kernel_name="python3", allow_errors=True)
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        [retried] = records_in(nb.cells[2])
        client.execute_cell(nb.cells[2], 2)  # run again: the provider fails
    assert any(o.output_type == "error" for o in nb.cells[2].outputs)
    [again] = records_in(nb.cells[2])  # what the cell did is still in its output
    assert {**again, "record_id": None} == {**retried, "record_id": None}
    assert "A better answer" in shown_text(nb.cells[2])

    path = tmp_path / "retry.ipynb"  # and after a restore, the same once more
    nbformat.write(nb, str(path))
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    with Kernel() as kernel:
        assert "restored 2 turns" in kernel.execute(f"%load_ext agent_nb\n{agent}").stdout
        again = kernel.execute("%session retry", cell_id=nb.cells[2].id)
        assert "upstream exploded" in again.error["evalue"]
        shown = [m["content"]["metadata"].get("agent_nb") for m in again.of_type("display_data")]
        assert [r["op"] for r in shown if r] == ["retry"]
        assert "A better answer" in kernel.execute("%session history").shown


@pytest.mark.kernel
def test_an_interrupted_retry_keeps_the_last_turn(server):
    server.script(Reply(text="The first answer"))
    with chat_kernel(server) as kernel:
        assert kernel.execute("%%chat\nhello").error is None
        server.chunk_delay = 0.1
        server.script(Reply(text=" ".join(f"word{i}" for i in range(60))))
        stopped = kernel.execute("%session retry", interrupt_after=1.5)
        history = kernel.execute("%session info\n%session history").shown
        assert "messages: 2" in history and "The first answer" in history
        assert "word0" not in history
        shown = stopped.of_type("display_data") + stopped.of_type("update_display_data")
        records = [m["content"]["metadata"].get("agent_nb") for m in shown]
        records = [r for r in records if r]
        # no turn is recorded; what the stopped answer spent is (a `spend` record)
        assert shown and [r["op"] for r in records] == ["spend"]
        assert records[0]["spend"][0]["usage"]["estimated"] == 1
        assert stopped.error["ename"] == "Interrupted"
        assert "unchanged: its last turn is kept" in stopped.error["evalue"]


# -- restoring a notebook record by record ---------------------------------------------------


def turn_record(session_id: str, prompt: str, answer: str, **changes) -> dict:
    from agent_nb import Message

    return {
        "version": 1,
        "op": "turn",
        "session_id": session_id,
        "system": None,
        "messages": [Message.user(prompt).to_dict(), Message.assistant(answer).to_dict()],
        **changes,
    }


def crafted_notebook(path) -> None:
    """A notebook of %%chat outputs: good records, and bad ones of every kind."""
    alice = turn_record("main", "My name is Alice", "Hello Alice")
    cells = [
        alice,
        turn_record("main", "x", "y", version="1"),
        turn_record("", "x", "y"),
        turn_record("main", "x", "y", messages="hello"),
        {**turn_record("main", "x", "y"), "messages": [{"role": "wizard", "parts": []}]},
        turn_record("main", "x", "y", op="frobnicate"),
        alice,  # the cell copied, output and all
        turn_record("main", "I live in Lyon", "Noted"),
        "garbage",
        turn_record("main", "x", "y", version=FORMAT_VERSION + 1),
        turn_record("main", "x", "y", marker="DEEP"),
        turn_record("main", "x", "y", marker="BROKEN"),
        {"version": 1, "op": "fork", "session_id": "side", "system": None, "fork_of": "main"},
        turn_record("side", "I also like tea", "Tea it is"),
        {"version": 1, "op": "turn", "session_id": "main", "system": None},
        turn_record("main", "x", "y", messages=[{"role": "user", "metadata": "M150"}]),
        {"version": 1, "op": "undo", "session_id": "side", "system": None, "record_id": "u1"},
        {"version": 1, "op": "undo", "session_id": "side", "system": None, "record_id": "u1"},
    ]
    notebook = nbformat.v4.new_notebook()
    for count, entry in enumerate(cells, start=1):
        output = nbformat.v4.new_output(
            "display_data", {"text/plain": "answer"}, metadata={"agent_nb": entry}
        )
        notebook.cells.append(
            nbformat.v4.new_code_cell("%%chat\n...", execution_count=count, outputs=[output])
        )
    text = nbformat.writes(notebook)
    text = text.replace('"marker": "DEEP"', '"deep": ' + "[" * 100_000 + "]" * 100_000)
    text = text.replace('"marker": "BROKEN"', '"broken": {"a": ')
    text = text.replace('"M150"', '{"a":' * 150 + "1" + "}" * 150)
    path.write_text(text)


@pytest.mark.kernel
def test_restore_skips_each_bad_record_with_a_line_and_restores_the_rest(tmp_path, monkeypatch):
    path = tmp_path / "crafted.ipynb"
    crafted_notebook(path)
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    with Kernel() as kernel:
        loaded = kernel.execute("%load_ext agent_nb")
        assert loaded.error is None
        assert f"restored 3 turns in 2 sessions from {path} (13 records skipped)" in loaded.stdout
        lines = [line for line in loaded.stderr.splitlines() if "skipped" in line]
        expected = {
            2: "version: Input should be a valid integer, got a string",
            3: "session_id: a session id must not be empty",
            4: "messages: Input should be a valid list",
            5: r"messages\[0\]\.role: Input should be",
            6: "op 'frobnicate' is not one this agent_nb knows",
            7: "a turn already restored \\(a copied cell\\)",
            9: "the record is 'garbage', not an object",
            10: f"format version {FORMAT_VERSION + 1}, newer than this agent_nb reads",
            11: "the cell cannot be read: it is nested more than 200 levels deep",
            12: "the cell cannot be read: it is not valid JSON",
            15: "the record of a turn has no messages",
            16: r"messages\[0\]\.metadata: .*nested more than 100 levels",
            18: "a copy of an earlier record",
        }
        assert len(lines) == len(expected), loaded.stderr
        for line, (cell, problem) in zip(lines, expected.items(), strict=True):
            assert line.startswith(f"agent_nb: skipped the record in cell {cell} (In [{cell}], ")
            assert re.search(problem, line), line
        assert "Traceback" not in loaded.stderr + loaded.stdout
        assert "not supported between" not in loaded.stderr + loaded.stdout
        listed = kernel.execute("%session list").stdout
        assert "  main  (4 messages)" in listed and "* side  (4 messages)" in listed
        history = kernel.execute("%session use main\n%session history").shown
        assert history.count("My name is Alice") == 1 and "I live in Lyon" in history
        restore = kernel.execute(f"%session restore {tmp_path / 'nowhere.ipynb'}")
        assert restore.error["ename"] == "ChatError"
        assert "No such file or directory; nothing was restored" in restore.error["evalue"]
        (tmp_path / "junk.ipynb").write_text('{"cells": [')
        junk = kernel.execute(f"%session restore {tmp_path / 'junk.ipynb'}")
        assert "it is not valid JSON" in junk.error["evalue"]
        assert len(junk.error["traceback"]) == 1


# -- tool calls that wait for approval ---------------------------------------------------------

BANK = (
    "from agent_nb import Agent, tool\n"
    "@tool(requires_approval=True)\n"
    "def transfer(amount: int, to: str) -> str:\n"
    "    '''Send money.'''\n"
    "    print('TRANSFERRED', amount, to)\n"
    "    return f'sent {amount} to {to}'\n"
    "bot = Agent(provider='openai', model='m', base_url='{url}', api_key='k', tools=[transfer])"
)


@pytest.mark.kernel
def test_a_waiting_call_is_shown_then_approved_after_a_kernel_restart(
    server, tmp_path, monkeypatch
):
    server.script(
        Reply(tool_calls=[{"name": "transfer", "arguments": {"amount": 5, "to": "Bob"}}]),
        Reply(text="Sent 5 to Bob."),
    )
    nb = run_notebook(
        "%load_ext agent_nb",
        BANK.replace("{url}", server.url),
        "%agent bot",
        "%%chat\nPay Bob 5",
        "%session info",
    )
    waiting = shown_text(nb.cells[3])
    assert "waiting for approval: transfer(amount=5, to='Bob')" in waiting
    assert "TRANSFERRED" not in waiting
    info = text_of(nb.cells[4])
    call_id = re.search(r"waiting for approval: (\S+) \(transfer\)", info).group(1)
    assert f"%session approve {call_id}" in waiting

    path = tmp_path / "bank.ipynb"
    nbformat.write(nb, str(path))
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    with Kernel() as kernel:  # a new kernel: the waiting call comes back from the notebook
        assert "restored 1 turn" in kernel.execute("%load_ext agent_nb").stdout
        kernel.execute(BANK.replace("{url}", server.url) + "\n%agent bot")
        assert f"waiting for approval: {call_id}" in kernel.execute("%session info").stdout
        refused = kernel.execute("%%chat\nsomething else")  # refused while the call waits
        assert refused.error["ename"] == "ChatError"
        assert f"{call_id!r} (transfer)" in refused.error["evalue"]
        resumed = kernel.execute(f"%session approve {call_id}")
        assert resumed.error is None, resumed.error
        assert "TRANSFERRED 5 Bob" in resumed.stdout
        final = resumed.last_display
        assert "Sent 5 to Bob." in final["data"]["text/plain"]
        record = final["metadata"]["agent_nb"]
        assert record["op"] == "resume"
        assert [m["role"] for m in record["messages"]] == ["tool", "assistant"]
        info = kernel.execute("%session info").stdout
        assert "messages: 4" in info and "waiting" not in info
        # the resume's record replays on top of the waiting turn after another restart
        cell = nbformat.v4.new_code_cell(f"%session approve {call_id}")
        cell.outputs = [
            nbformat.v4.new_output("display_data", data=final["data"], metadata=final["metadata"])
        ]
        nb.cells.append(cell)
        nbformat.write(nb, str(path))
    with Kernel() as kernel:
        loaded = kernel.execute("%load_ext agent_nb")
        assert "restored 2 turns" in loaded.stdout and "skipped" not in loaded.stderr
        history = kernel.execute("%session history").shown
        assert history.count("[tool]") == 1 and "Sent 5 to Bob." in history
        assert "waiting" not in kernel.execute("%session info").stdout


@pytest.mark.kernel
def test_denying_a_waiting_call_tells_the_model_why(server):
    server.script(
        Reply(tool_calls=[{"name": "transfer", "arguments": {"amount": 500, "to": "Eve"}}]),
        Reply(text="I did not send it."),
    )
    with Kernel() as kernel:
        kernel.execute("%load_ext agent_nb\n" + BANK.replace("{url}", server.url) + "\n%agent bot")
        kernel.execute("%%chat\nPay Eve 500")
        call_id = re.search(
            r"waiting for approval: (\S+)", kernel.execute("%session info").stdout
        ).group(1)
        unknown = kernel.execute("%session deny nope")
        assert (
            unknown.error["ename"] == "ChatError"
            and "no tool call 'nope'" in unknown.error["evalue"]
        )
        denied = kernel.execute(f"%session deny {call_id} too much money")
        assert denied.error is None and "TRANSFERRED" not in denied.stdout
        assert "I did not send it." in denied.last_display["data"]["text/plain"]
        sent = server.requests[-1]["messages"][-1]
        assert sent["role"] == "tool"
        assert sent["content"] == "The user did not approve this call: too much money."


@pytest.mark.kernel
def test_a_turn_whose_store_fails_is_kept_shown_and_recorded(server):
    server.script(Reply(text="The answer you see."))
    with Kernel() as kernel:
        kernel.execute(
            "%load_ext agent_nb\n"
            "from agent_nb import Agent\nfrom agent_nb.stores import MemoryStore\n"
            "class Broken(MemoryStore):\n"
            "    def save(self, session_id, data):\n"
            "        raise OSError('disk full')\n"
            "    def append(self, *args, **kwargs):\n"
            "        raise OSError('disk full')\n"
            f"bot = Agent(provider='openai', model='m', base_url='{server.url}', api_key='k', "
            "store=Broken())\n%agent bot"
        )
        turn = kernel.execute("%%chat\nhello")
        assert turn.error["ename"] == "ChatError"
        assert "kept in this notebook, but" in turn.error["evalue"]
        assert "disk full" in turn.error["evalue"] and "unchanged" not in turn.error["evalue"]
        final = turn.last_display
        assert "The answer you see." in final["data"]["text/plain"]
        assert final["metadata"]["agent_nb"]["op"] == "turn"
        assert "messages: 2" in kernel.execute("%session info").stdout
