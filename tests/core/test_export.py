"""session.to_notebook(), Session.from_notebook(), and the transcript a Session renders as."""

from __future__ import annotations

import nbformat
import pytest

from agent_nb import Agent, Message, Session, tool
from agent_nb.errors import InvalidSessionData
from agent_nb.providers.testing import TestProvider
from agent_nb.stores import NotebookStore

CODE_ANSWER = (
    "Here is how:\n\n```python\nimport math\nprint(math.pi)\n```\n\nAnd a shell step:\n\n"
    "```bash\nls\n```\n\nDone <script>alert(1)</script>."
)


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def conversation() -> Session:
    agent = Agent(provider=TestProvider([CODE_ANSWER]), model="m", tools=[get_weather])
    session = agent.session(session_id="trip", system="Be brief.")
    session.run("How do I print pi?")
    session.agent.provider.add_reply(Message.assistant("The weather: sunny."))
    session.run("And the weather?")
    return session


def test_to_notebook_is_valid_with_a_cell_per_prompt_and_answer():
    session = conversation()
    notebook = session.to_notebook()
    nbformat.validate(notebook)
    kinds = [(c.cell_type, c.metadata.get("agent_nb", {}).get("role")) for c in notebook.cells]
    assert kinds == [
        ("markdown", None),  # the title: id, model, system prompt
        ("markdown", "user"),
        ("markdown", "assistant"),
        ("markdown", "user"),
        ("markdown", "assistant"),
    ]
    assert "Be brief." in notebook.cells[0].source
    assert "<code>trip</code>" in notebook.cells[0].source
    assert "<strong>you</strong>: How do I print pi?" in notebook.cells[1].source
    assert ">import</span> math" in notebook.cells[2].source  # highlighted
    assert "<script>" not in notebook.cells[2].source  # model output is inert HTML
    assert "Done &lt;script&gt;alert(1)&lt;/script&gt;." in notebook.cells[2].source
    assert notebook.metadata["agent_nb"]["sessions"]["trip"] == session.to_dict()


def test_code_blocks_become_runnable_code_cells_when_asked():
    notebook = conversation().to_notebook(code_cells=True)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert [c.source for c in code] == ["import math\nprint(math.pi)"]  # bash stays prose
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    answer = [
        c.source
        for c in notebook.cells
        if c.metadata.get("agent_nb", {}).get("role") == "assistant"
    ]
    assert "<p>Here is how:</p>" in answer[0] and answer[1] == "import math\nprint(math.pi)"
    assert "<pre><code>ls\n</code></pre>" in answer[2]


def test_tool_calls_are_shown_in_the_export():
    agent = Agent(provider="test", model="m", tools=[get_weather])
    session = agent.session()
    session.run("What is the weather in Paris?")
    cells = session.to_notebook().cells
    assert '🔧 <code>get_weather({"city": "Paris"})</code>' in cells[2].source
    assert "<pre><code>sunny in Paris</code></pre>" in cells[2].source


def test_from_notebook_reads_an_export_back(tmp_path):
    session = conversation()
    path = tmp_path / "trip.ipynb"
    nbformat.write(session.to_notebook(), path)
    again = Session.from_notebook(path, session.agent)
    assert again.messages == session.messages and again.system == "Be brief."
    assert NotebookStore(path).load("trip") == session.to_dict()  # the same layout


def test_from_notebook_reads_a_notebook_of_chat_cells(tmp_path):
    from agent_nb import _records

    agent = Agent(provider="test", model="m")
    session = agent.session(session_id="main")
    response = session.run("hello")
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("%%chat\nhello")
    cell.outputs = [
        nbformat.v4.new_output(
            "display_data",
            {"text/html": response.text, "text/plain": response.text},
            metadata=_records.record("turn", session, list(response.messages)),
        )
    ]
    notebook.cells.append(cell)
    path = tmp_path / "chat.ipynb"
    nbformat.write(notebook, path)
    assert Session.from_notebook(path, agent).messages == session.messages


def test_from_notebook_says_when_there_is_no_session(tmp_path):
    path = tmp_path / "plain.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), path)
    with pytest.raises(InvalidSessionData, match="holds no agent_nb session.*to_notebook"):
        Session.from_notebook(path, Agent(provider="test"))
    nbformat.write(conversation().to_notebook(), path)
    with pytest.raises(InvalidSessionData, match="no agent_nb session 'other'; it has: 'trip'"):
        Session.from_notebook(path, Agent(provider="test"), session_id="other")


def test_a_session_and_a_response_render_as_inert_html():
    session = conversation()
    shown = session._repr_html_()
    assert "<em>session <code>trip</code> · 4 messages</em>" in shown
    assert "<strong>you</strong>: How do I print pi?" in shown
    assert "<script>" not in shown and "&lt;script&gt;" in shown
    assert not hasattr(session, "_repr_markdown_")
    response = session.agent.session().run("Say <img src=x onerror=alert(1)>")
    assert "&lt;img src=x onerror=alert(1)&gt;" in response._repr_html_()
    assert not hasattr(response, "_repr_markdown_")
