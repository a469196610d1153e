"""A session as a Jupyter notebook (nbformat v4), and a session read back from one.

Session.to_notebook / from_notebook call this module, so it never imports session.py or
agent.py: it takes the session as `Conversation` and the class to rebuild one with.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from . import _records
from . import _render as render
from ._records import KEY
from .errors import InvalidSessionData
from .messages import Message

if TYPE_CHECKING:
    from ._records import Rebuilt
    from ._turn import AgentConfig


class Conversation(Protocol):
    """What an export reads of a session (session.Session is the one there is)."""

    session_id: str
    system: str | None
    agent: AgentConfig

    @property
    def messages(self) -> list[Message]: ...


#: The fences taken as Python code.
PYTHON = {"python", "py", "python3"}


def to_notebook(session: Conversation, *, code_cells: bool = False) -> Any:
    """The conversation as a notebook: a Markdown cell per prompt and per answer.

    Each Markdown cell holds the sanitized HTML the notebook shows (render.markdown_cell), so
    it stays inert in JupyterLab, in nbconvert's HTML and on GitHub. With `code_cells`, the
    Python code blocks of answers become code cells, ready to run. The session itself rides
    along in `metadata["agent_nb"]`, as a NotebookStore keeps it.
    """
    import nbformat.v4 as v4

    notebook = v4.new_notebook()
    title = (
        f"<h1>Conversation <code>{render.escaped(session.session_id)}</code></h1>\n"
        f"<p>model: <code>{render.escaped(str(session.agent.model))}</code></p>\n"
    )
    if session.system:
        title += render.transcript_html([], session.system)
    notebook.cells.append(v4.new_markdown_cell(render.markdown_cell(title)))
    for turn in _turns(session.messages):
        prompt, answer = turn[0], turn[1:]
        if prompt.role == "user":
            notebook.cells.append(
                v4.new_markdown_cell(
                    render.markdown_cell(render.transcript_html([prompt])),
                    metadata=_cell_meta([prompt]),
                )
            )
        else:
            answer = turn
        if answer:
            notebook.cells.extend(_answer_cells(answer, code_cells))
    notebook.metadata[KEY] = {
        "sessions": {session.session_id: session.to_dict()},
        "exported": session.session_id,
    }
    if code_cells:
        notebook.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        notebook.metadata["language_info"] = {"name": "python"}
    return notebook


def write_notebook(session: Conversation, path: str | os.PathLike[str], **options: Any) -> Path:
    """Write `to_notebook(session)` to `path`; it is checked with nbformat.validate first."""
    import nbformat

    notebook = to_notebook(session, **options)
    nbformat.validate(notebook)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, target)
    return target


def from_notebook(
    path: str | os.PathLike[str], agent: AgentConfig, session_id: str | None, session_class: Any
) -> Rebuilt:
    """The session an exported notebook (or a notebook of %%chat cells) holds, made by
    `session_class` (Session: its `from_dict`, or a new one the records replay into)."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    ours = notebook.metadata.get(KEY) or {}
    stored = ours.get("sessions") or {}
    chosen = (
        session_id or ours.get("exported") or (next(iter(stored)) if len(stored) == 1 else None)
    )
    if chosen in stored:
        return session_class.from_dict(stored[chosen], agent)  # type: ignore[no-any-return]
    replayed = _records.replay(_records.records(notebook), agent, session_class)
    rebuilt, current = replayed.sessions, replayed.current
    chosen = chosen or current
    if chosen in rebuilt:
        return rebuilt[chosen]
    known = ", ".join(map(repr, sorted({*stored, *rebuilt})))
    if known:
        raise InvalidSessionData(f"{path} holds no agent_nb session {chosen!r}; it has: {known}")
    raise InvalidSessionData(
        f"{path} holds no agent_nb session; export one with session.to_notebook() "
        "or %session export PATH.ipynb"
    )


def _turns(messages: list[Message]) -> list[list[Message]]:
    """The history cut before each user message."""
    turns: list[list[Message]] = []
    for message in messages:
        if message.role == "user" or not turns:
            turns.append([message])
        else:
            turns[-1].append(message)
    return turns


def _answer_cells(messages: list[Message], code_cells: bool) -> list[Any]:
    """The answer's cells: its HTML in Markdown cells, cut around Python code cells if asked."""
    import nbformat.v4 as v4

    meta = _cell_meta(messages)
    cells, shown = [], []

    def flush() -> None:
        if shown:
            cells.append(v4.new_markdown_cell(render.markdown_cell("".join(shown)), metadata=meta))
            shown.clear()

    for kind, part in render.turn_parts(messages):
        if kind == "html":
            shown.append(part)
            continue
        pieces = render.code_blocks(part, PYTHON) if code_cells else [("markdown", part)]
        for piece, text in pieces:
            if piece == "code":
                flush()
                cells.append(v4.new_code_cell(render.clean(text), metadata=meta))
            else:
                shown.append(render.html(text))
    flush()
    return cells


def _cell_meta(messages: list[Message]) -> dict[str, Any]:
    return {KEY: {"role": messages[0].role, "message_ids": [m.id for m in messages]}}
