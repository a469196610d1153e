"""The live %%chat turn: which session a cell talks in, the answer shown as it streams, and
its record in the cell's output (also for `%session retry` and approvals).

A cell run again makes its turn again, in its place (see cells.py for how a cell is known):
the new answer is made on a copy of the session and swapped in once it has finished, so a
turn that fails or is stopped leaves the session, and the cell's earlier record, as they were.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import _records, _turns
from .. import _render as render
from ..errors import AgentError, SessionBusyError, SessionChangedError, StoreError
from ..events import Response
from ..messages import Message, _count, tool_server
from ..session import Session
from . import _display, _gauge, _routing
from ._errors import ChatError, Interrupted
from .live import LiveHTML, LivePlain, live_answer
from .workspace import Workspace


@dataclass(frozen=True)
class Request:
    """A %%chat cell, parsed: its prompt, where it talks, and the turn's settings."""

    prompt: str
    session_id: str | None = None
    fork: str | None = None
    system: str | None = None
    settings: dict[str, Any] | None = None
    schema: str | None = None  # the name of a pydantic model in the namespace
    stream: bool = True
    new: bool = False  # --new: session_id is a new session


def chat(workspace: Workspace, request: Request) -> Response:
    """The cell's turn: at the end of its session, or in its place if the cell made it
    before (a cell run again talks where it talked, made anew if it was deleted)."""
    previous = workspace.cells.previous(fork=bool(request.fork))
    again = previous if previous is not None and previous.first_id else None
    if again and workspace.cells.in_order:  # Restart and Run All: quiet unless it differs
        recorded = workspace.message(again.first_id)
        if recorded is not None and recorded.text != request.prompt:
            print(
                "agent_nb: this cell's prompt differs from the saved run's; the turns after "
                "it are made anew as their cells run"
            )
    # (a session renamed since is the one the cell talked in: `made_as` is its old id)
    if again and request.session_id in (None, again.session_id, again.made_as) and not request.fork:
        in_place = workspace.sessions.get(again.session_id)
        if in_place is not None and again.first_id in {m.id for m in in_place.messages}:
            return _again(workspace, request, in_place, again)
    deleted = again and request.session_id is None and again.session_id not in workspace.sessions
    name = again.session_id if deleted and again else request.session_id
    made_here = previous is not None and name in (previous.session_id, previous.made_as)
    if request.new and name in workspace.sessions and not made_here:
        raise ChatError(f"session {name!r} exists: %%chat {name} talks in it")
    session = workspace.session(
        name, make="" if deleted or made_here or request.new else "%%chat --new"
    )
    extra: dict[str, Any] = {}
    if request.fork:
        extra["fork_of"] = session.session_id
        session, _ = workspace.fork(session, request.fork, replace=False, previous=previous)
    schema = _schema(workspace, request.schema)
    drops = workspace.superseded(previous)
    if drops:
        extra["drops"] = drops
    response = _answer_cell(workspace, request, schema, session, session, op="turn", extra=extra)
    workspace.made(session, response, previous, drops)
    return response


def _again(
    workspace: Workspace, request: Request, session: Session, previous: _records.Made
) -> Response:
    """The cell made a turn in `session` before: that turn is made again, in its place;
    the turns after it stay, as a new session named in the output."""
    assert previous.first_id is not None
    schema = _schema(workspace, request.schema)
    history = session.messages
    order = [m.id for m in history]
    at, end = _turns.span(history, previous.first_id) or (len(history), len(history))
    later = workspace.cells.unmade({m.id for m in history[end:] if m.role == "user"})
    kept_as = workspace.free_name(session.session_id) if later else None
    drops = workspace.superseded(previous)
    retake = session.retake(previous.first_id)
    if workspace.cells.in_order:  # Restart & Run All: on the candidate the saved run was
        answers = [m for m in history[at:end] if m.role == "assistant"]
        _routing.pinned(retake.copy, answers[-1] if answers else None)

    def replace(response: Response) -> None:
        try:
            retake.check()
        except SessionChangedError as exc:
            raise ChatError(str(exc)) from None
        if kept_as is not None:
            workspace.keep(session.fork(kept_as), later, order)
        retake.commit()

    extra: dict[str, Any] = {"replaces": previous.first_id}
    if kept_as:
        extra["kept_as"] = kept_as
    if drops:
        extra["drops"] = drops
    try:
        response = _answer_cell(
            workspace,
            request,
            schema,
            session,
            retake.copy,
            op="rerun",
            extra=extra,
            replace=replace,
        )
    except ChatError:  # the cell's new output replaces its old record: it is given again
        show_again(workspace, session, history[at:end], "turn")
        raise
    if kept_as is not None and not workspace.cells.in_order:  # (in Run All, their cells
        print(  # make them again further down)
            f"agent_nb: this cell's turn was made again; the {len(history) - end} messages "
            f"after it are kept in session {kept_as!r} (%session use {kept_as})"
        )
    workspace.made(session, response, previous, drops)
    return response


def _answer_cell(
    workspace: Workspace,
    request: Request,
    schema: Any,
    session: Session,
    on: Session,
    *,
    op: str,
    extra: dict[str, Any],
    replace: Callable[[Response], None] | None = None,
) -> Response:
    """The cell's prompt answered live for `session`, on `on` (the session, or the copy a
    turn made again is made on), with the cell's --system prompt."""
    with _system_for_the_turn(session, request.system):
        if on is not session:
            on.system = session.system
        return live(
            workspace,
            on,
            request.prompt,
            request.settings or {},
            schema,
            stream=request.stream,
            op=op,
            replace=replace,
            extra=extra,
        )


def retry(workspace: Workspace) -> Response:
    """`%session retry`: the current session's last prompt answered again; the new answer
    replaces the old once it has finished."""
    session = workspace.session()
    # The new answer is made on a copy that lacks the last turn: until it has finished,
    # the session, its store and the notebook's records are as they were.
    try:
        retake = session.retake()
    except SessionBusyError as exc:
        raise ChatError(str(exc)) from None
    except AgentError:  # no prompt in it
        raise ChatError("nothing to retry") from None
    replaced = retake.replaced
    unsaved: list[StoreError] = []

    def replace(response: Response) -> None:
        try:
            new = retake.commit()
        except SessionChangedError as exc:
            raise ChatError(str(exc)) from None
        except StoreError as exc:
            new = list(response.messages)
            unsaved.append(exc)
        if new:
            workspace.cells.moved(replaced[0].id, new[0].id)

    prompt = replaced[0]
    settings = {"images": prompt.images} if prompt.images else {}
    try:
        response = live(
            workspace,
            retake.copy,
            prompt.text,
            settings,
            None,
            stream=True,
            op="retry",
            replace=replace,
        )
    except ChatError:
        if workspace.cells.retried_here(prompt.id):  # this cell's, from its last run
            show_again(workspace, session, list(replaced), "retry")
        raise
    if response.messages:
        workspace.cells.retried(response.messages[0].id)
    if unsaved:
        raise ChatError(f"answered again, but {unsaved[0]}")
    return response


def resume(workspace: Workspace, session: Session) -> Response:
    """The calls that waited for approval, run (or refused) now that each is decided."""
    return live(workspace, session, None, {}, None, stream=True, op="resume")


def live(
    workspace: Workspace,
    session: Session,
    prompt: str | None,
    settings: dict[str, Any],
    schema: Any,
    *,
    stream: bool,
    op: str,
    replace: Callable[[Response], None] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    """One turn shown live and recorded as `op`; with `replace`, a turn made again on a copy
    of the session: `replace(response)` puts the finished answer in place of the old one,
    and an answer that does not finish changes nothing, its record included. With `prompt`
    None, the turn resumes the calls that waited for approval."""
    notice = workspace.offline_notice(session)
    if notice is not None:
        print(notice)
    shown = live_answer(rich=_display.rich(workspace.shell))
    before = len(session.messages)
    waiting = session.messages[-1].id if prompt is None else None
    started, spent = time.monotonic(), session.cost
    extra = extra or {}
    earlier = "this cell's earlier turn" if op == "rerun" else "its last turn"
    unsaved: StoreError | None = None
    try:
        response = _answer(shown, session, prompt, settings, schema, stream)
    except KeyboardInterrupt:
        kept = session.messages[before:]
        if prompt is None:  # a resume replaces the waiting round, once anything ran
            changed = session.messages[before - 1].id != waiting
            kept = session.messages[before - 1 :] if changed else []
        if kept and not replace:
            carried = _carried(workspace, session, extra, kept[0].id)
            record = _records.record(op, session, kept, **extra, **carried)
        else:  # nothing kept: what it spent still goes in the notebook
            carried = _carried(workspace, session, {}, None)
            record = _records.record("spend", session, **carried) if carried else None
        model = settings.get("model", session.agent.model)
        costs = (session.cost - spent, session.cost)
        _show_stopped(shown, kept, model, time.monotonic() - started, record, costs)
        if replace is not None:  # the copy keeps what was shown; the session, nothing
            raise Interrupted(
                f"stopped; session {session.session_id!r} is unchanged: {earlier} is kept"
            ) from None
        raise Interrupted(
            f"stopped; {'the partial answer is kept' if kept else 'nothing was kept'} in "
            f"session {session.session_id!r}"
        ) from None
    except StoreError as exc:  # the turn is in the session; only its store missed it
        if exc.response is None:
            raise ChatError(str(exc)) from None
        response, unsaved = exc.response, exc
    except AgentError as exc:
        note = f": {earlier} is kept" if replace is not None else ""
        _show_failed_spend(workspace, session, spent)
        policy = settings.get("context") or session.context_policy or session.agent.context
        hint = _gauge.hint(exc, policy)
        raise ChatError(
            f"{exc} (session {session.session_id!r} is unchanged{note}){hint}"
        ) from None
    if replace is not None:
        replace(response)
    streamed = prompt is None or (stream and schema is None)  # else show it now, whole
    gauge = _gauge.facts(_gauge.report(session))  # (a copy's report: its request was this)
    gauge += _routing.facts(response.messages)  # after a switch: from where, and why
    shown.finish(
        render.footer(
            response, time.monotonic() - started, (session.cost - spent, session.cost), gauge
        ),
        _records.record(
            op,
            session,
            list(response.messages),
            **extra,
            **_carried(workspace, session, extra, response.messages[0].id),
        ),
        shown=None if streamed else render.turn_html(response.messages),
        plain=None if streamed else response.text,
    )
    problem = _gauge.cut(response.messages)
    if problem is not None:  # the server cut the request in silence: the answer is kept
        _display.show(workspace.shell, *_gauge.notice(problem), None)
    if response.pending_approvals:
        _show_waiting(workspace, list(response.pending_approvals))
    if unsaved is not None:
        raise ChatError(f"answered, and kept in this notebook, but {unsaved}") from None
    return response


def _answer(
    shown: LiveHTML | LivePlain,
    session: Session,
    prompt: str | None,
    settings: dict[str, Any],
    schema: Any,
    stream: bool,
) -> Response:
    """The turn's answer, streamed into `shown` as it comes (not for --schema, --no-stream)."""
    if prompt is None:
        for call in session.pending_approvals:  # called in an earlier cell
            server = tool_server(session.messages[-2].metadata.get("tool_sources"), call.id)
            shown.tool_call(call.id, call.name, call.arguments_json(), server)
        events = session.stream_resume(**settings)
    elif schema is not None:
        return session.json(prompt, schema=schema, **settings)
    elif not stream:
        return session.run(prompt, **settings)
    else:
        events = session.stream(prompt, **settings)
    try:
        for event in events:
            if event.type == "text_delta":
                shown.text(event.text)
            elif event.type == "tool_call":
                shown.tool_call(event.id, event.name, event.arguments, event.server)
            elif event.type == "tool_result":
                shown.tool_result(event.tool_call_id, event.content, event.is_error)
    finally:
        events.close()
    return events.response


def _show_stopped(
    shown: LiveHTML | LivePlain,
    kept: list[Message],
    model: str,
    seconds: float,
    record: dict[str, Any] | None,
    spent: tuple[Any, Any],
) -> None:
    """The end of a turn the stop button cut short: what was kept, its cost (`spent`: the
    turn's, the session's), and its record."""
    partial = Response(
        text="".join(m.text for m in kept if m.role == "assistant"),
        messages=tuple(kept),
        model=model,
        interrupted=True,
    )
    shown.finish(
        render.footer(partial, seconds, spent),
        record,
        empty="*(stopped before any text arrived: nothing kept)*",
    )


def show_again(workspace: Workspace, session: Session, kept: list[Message], op: str) -> None:
    """A turn the running cell made before, shown with its record again: the cell's new
    output replaces its old one, which a restore reads."""
    _display.show(
        workspace.shell,
        render.turn_html(kept),
        "\n".join(m.text for m in kept if m.role == "assistant"),
        _records.record(op, session, kept, **_carried(workspace, session, {}, kept[0].id)),
    )


def _carried(
    workspace: Workspace, session: Session, extra: dict[str, Any], first_id: str | None
) -> dict[str, Any]:
    """The `spend` a record of the running cell carries (see _spend_records), as record()
    takes it: the session's entries no record carries yet, and what the record it replaces
    carried (this cell's earlier output, the turn a re-run makes again)."""
    cell = workspace.cells.cell_id
    carried = workspace.spend.carry(
        session, (cell, extra.get("replaces"), first_id), (cell, first_id)
    )
    return {"spend": carried} if carried else {}


def _show_failed_spend(workspace: Workspace, session: Session, before: Any) -> None:
    """A turn that failed after requests it paid for: one line saying so, its record
    carrying them (none for a turn refused before anything was sent)."""
    failed = session.cost - before
    if not failed.requests:
        return
    carried = _carried(workspace, session, {}, None)
    _display.publish(
        workspace.shell,
        f"*this failed turn spent {failed} in {_count(failed.requests, 'request')} (in "
        f"session `{session.session_id}`'s ledger: `%session cost`)*",
        _records.record("spend", session, **carried),
    )


def _show_waiting(workspace: Workspace, calls: list[Any]) -> None:
    """The calls a turn stopped at, with the commands that decide them."""
    rows, lines = [], []
    for call in calls:
        args = ", ".join(f"{k}={v!r}" for k, v in call.arguments_json().items())
        what = f"{call.name}({args})"
        approve = f"%session approve {call.id} [--always]"
        deny = f"%session deny {call.id} [reason]"
        lines.append(f"waiting for approval: {what}\n  run: {approve}  or: {deny}")
        rows.append(
            f"<li>⏸ <code>{render.escaped(what)}</code> waits for your approval: run "
            f"<code>{render.escaped(approve)}</code> or <code>{render.escaped(deny)}</code>"
            "</li>"
        )
    _display.show(workspace.shell, f"<ul>{''.join(rows)}</ul>", "\n".join(lines), None)


def _schema(workspace: Workspace, name: str | None) -> Any:
    """The pydantic model `--schema NAME` names, from the notebook's namespace."""
    if name is None:
        return None
    schema = workspace.shell.user_ns.get(name)
    if schema is None:
        raise ChatError(
            f"--schema {name}: no such name in the notebook; define a pydantic "
            "model with that name first"
        )
    return schema


@contextlib.contextmanager
def _system_for_the_turn(session: Session, system: str | None) -> Any:
    """%%chat --system: the session's system prompt from now on, unless the turn fails with
    nothing kept (then the session is as it was, its system prompt included)."""
    if system is None:
        yield
        return
    before, ids = session.system, [m.id for m in session.messages]
    session.system = system
    try:
        yield
    except BaseException:
        if [m.id for m in session.messages] == ids:
            session.system = before
        raise
