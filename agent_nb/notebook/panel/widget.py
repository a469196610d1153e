"""ChatPanel: a chat window on a Session, one anywidget model per panel.

The Session is the truth and the panel a view of it. Every piece of HTML the front end shows
is rendered and sanitized here (render.py); panel.js only inserts it. The comm carries
custom messages:

- to the front end: `reset` (the whole conversation), `append` (messages new in the
  session), `start` (a prompt is on its way), `delta` (finished blocks of the streaming
  answer, appended once, and the re-rendered tail since the last block), `card` (a tool
  call's card with its result, in place of the call's), `end` (the turn's error, and
  whether Retry can do it again; the `append` before it has replaced the live answer with
  the session's);
- from it: `hello` (a view opened: send it the conversation), `send`, `stop`, `undo`.

The controls (_panel_controls.py) add `controls` (the switchers, the footer, the prompt ↑
recalls) and `editing` (a prompt's text, to edit) to the front end, and `regenerate`,
`edit`, `send` with `edit` (fork there), `approve`, `deny`, `retry`, `switch` and `new`
from it.

The answer streams as an asyncio task on the kernel's loop, so Stop and the other controls
are handled while tokens arrive. A turn made elsewhere on the same session (`%%chat`) shows
up when its cell ends: the panel listens to IPython's `post_run_cell`, which costs nothing
while idle and catches every cell that could have changed the session (a turn made from a
thread outside any cell shows up at the next cell, or at the panel's next turn).

The panel shows as two outputs: the widget view, then the session's transcript as sanitized
text/html: what a saved notebook, nbviewer or nbconvert shows without a kernel. It is
refreshed (update_display_data) after every turn, so the saved notebook has the latest. A
live view hides the transcript and empties its nodes in the page (panel.js); `close()`
sends it again, to show where the views were.
"""

from __future__ import annotations

import asyncio
import functools
import pathlib
import sys
import time
import uuid
import weakref
from collections.abc import Callable
from typing import Any

import anywidget
import traitlets

from ... import _render as render
from ...agent import Agent
from ...errors import AgentError
from ...messages import Message, ToolResultPart
from ...session import Session
from .. import _panel_records
from ..live import BYTE_BUDGET, MESSAGE_BYTES, UPDATE_INTERVAL, _Blocks
from . import cards as _panel_cards
from .controls import _Controls
from .items import RenderedMarkdown, RenderedMessages

#: Bytes the tail may cost beyond BYTE_BUDGET per character received (a short answer's
#: tail refreshes at the full rate; then the budget rules).
BYTE_ALLOWANCE = 20_000

_HERE = pathlib.Path(__file__).parent


class ChatPanel(_Controls, anywidget.AnyWidget):
    """A chat window on a Session (or a new session of an Agent), inside the notebook."""

    _esm = _HERE / "panel.js"
    _css = _HERE / "panel.css"
    #: Synced to the front end: which session, and whether a turn is running.
    session_id = traitlets.Unicode("").tag(sync=True)
    busy = traitlets.Bool(False).tag(sync=True)
    #: Marks the panel's transcript output, which its live view hides.
    _fallback_id = traitlets.Unicode("").tag(sync=True)

    def __init__(self, session_or_agent: Session | Agent, *, store: Any = None) -> None:
        if not isinstance(session_or_agent, Agent | Session):
            raise TypeError(
                "ChatPanel takes a Session or an Agent (ChatPanel(agent.session()) or "
                f"ChatPanel(agent)), got {type(session_or_agent).__name__}"
            )
        opened = _panel_records.open_panel(session_or_agent, store)  # its cell's, if it ran
        session = opened.session
        super().__init__(session_id=session.session_id, _fallback_id=uuid.uuid4().hex)
        self._store = store if store is not None else session.store
        self._sessions: dict[str, Session] = opened.sessions
        self._log = opened.log  # what is done in the panel, kept in its output's metadata
        self._logged = False  # whether the running turn was asked for in the panel
        self._session = session
        self._shown: list[str] = []  # ids of the messages the front end shows
        markdown = RenderedMarkdown()
        self._html = RenderedMessages(markdown)  # the items' HTML
        self._transcript_html = RenderedMessages(markdown)  # the fallback's
        self._task: asyncio.Task | None = None
        self._started = self._stop_early = False
        self._display_ids: list[str] = []
        self._notes: dict[str, Any] = {}  # the last turn's error, for a new view
        self._controls_init()
        self.on_msg(_Handler(self))
        self._listen()

    # -- public --------------------------------------------------------------------------

    @property
    def session(self) -> Session:
        """The session the panel shows."""
        return self._session

    def send(self, text: str) -> Any:  # type: ignore[override]
        """Send `text` as the next prompt and stream the answer into the panel.

        In a running event loop (a notebook cell) this returns the turn's task at once
        (`await` it for the Response); with no loop it runs the turn and returns the Response.
        """
        if not isinstance(text, str) or not text.strip():
            raise ValueError("panel.send takes the prompt as a non-empty string")
        if self.busy:
            raise AgentError(
                f"the panel on session {self._session.session_id!r} is answering: "
                "panel.stop() first, or wait for the answer"
            )
        return self._launch(self._turn(text))

    def _launch(self, turn: Any) -> Any:
        """Run the coroutine `turn` as the panel's task (or to its end with no loop)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(turn)
        self.busy = True  # at once: a second send before the task starts is refused
        self._started = self._stop_early = False
        self._logged = _panel_records.from_the_front_end()
        self._task = loop.create_task(turn)
        return self._task

    def stop(self) -> None:
        """Stop the answer streaming now; the text read so far is kept in the session."""
        task = self._task
        if task is None or task.done():
            return
        if self._started:
            task.cancel()
        else:  # cancelled before its first line, the task could not tidy up: it stops itself
            self._stop_early = True

    def switch(self, session_id: str) -> Session:
        """Show session `session_id`: one this panel has shown, or the store's (new if not)."""
        if self.busy:
            raise AgentError("the panel is answering: panel.stop() first, then switch")
        session = self._sessions.get(session_id)
        known = session is not None
        if session is None:
            session = self._session.agent.session(session_id=session_id, store=self._store)
            self._sessions[session.session_id] = session
        self._session = session
        self._log.session_id = session.session_id
        if _panel_records.from_the_front_end():
            self._note(_panel_records.switch(session, known))
        self.session_id = session.session_id
        self._notes = {}
        self._sync(reset=True)
        self._refresh_fallback()
        return session

    def close(self) -> None:
        """Close the panel: its views go, and its transcript shows in their outputs again."""
        live = self.comm is not None
        super().close()
        if live and not sys.is_finalizing():  # the views emptied it (panel.js hideFallback)
            self._refresh_fallback()

    # -- display -------------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        if self.comm is None:  # closed: no view can be made (ipywidgets would raise)
            return self._fallback()
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
        metadata = {**metadata, **render.publishable(self._log.metadata(self._session))}
        return {**data, **self._fallback()}, metadata

    def _ipython_display_(self) -> None:
        """Two outputs: the widget, then the transcript with the panel's record (refreshed
        after every turn; the widget's output is never updated, which would make the view
        again). JupyterLab and Notebook 7 prefer a widget view to any HTML in its bundle, and
        with no kernel show "Loading widget..." or "model not found" in its place: a separate
        output keeps the transcript in sight there. A live view hides it (panel.js)."""
        from IPython.display import display

        if self.comm is None:  # closed: its conversation, with no record (that is its cell's)
            display(self._fallback(), raw=True)
            return
        bundle = super()._repr_mimebundle_()
        view = bundle[0] if isinstance(bundle, tuple) else bundle
        display({**view, "text/plain": self._plain()}, raw=True)
        display_id = uuid.uuid4().hex
        data, metadata = self._transcript()
        display(data, metadata=metadata, raw=True, display_id=display_id)
        self._display_ids.append(display_id)

    def _transcript(self) -> tuple[dict[str, str], dict[str, Any]]:
        """The transcript output: marked as this panel's, with the panel's record."""
        data = self._fallback()
        marked = f'<div data-agent-nb-fallback="{self._fallback_id}">{data["text/html"]}</div>'
        metadata = render.publishable(self._log.metadata(self._session))
        return {**data, "text/html": marked}, metadata

    def _fallback(self) -> dict[str, str]:
        """The static transcript shown where the widget cannot be (no kernel, nbviewer)."""
        session = self._session
        self._transcript_html.keep_only(session.messages)
        shown = self._transcript_html.message_html
        return {
            "text/html": render.session_html(
                session.session_id, session.messages, session.system, shown
            ),
            "text/plain": self._plain(),
        }

    def _plain(self) -> str:
        return f"ChatPanel(session {self._session.session_id!r})"

    def _refresh_fallback(self) -> None:
        if not self._display_ids:
            return
        from IPython.display import update_display

        data, metadata = self._transcript()
        for display_id in self._display_ids:
            update_display(data, metadata=metadata, raw=True, display_id=display_id)

    # -- the conversation ------------------------------------------------------------------

    def _post(self, **content: Any) -> None:
        """A custom message to every view (Widget.send is the prompt here)."""
        self._send({"method": "custom", "content": content})

    def _sync(self, *, reset: bool = False) -> None:
        """Bring the front end to the session's history: the new messages, or all of it."""
        messages = self._session.messages
        ids = [m.id for m in messages]
        if not reset and ids[: len(self._shown)] == self._shown:
            self._post(type="append", items=self._items_of(messages, len(self._shown)))
        else:
            self._post(type="reset", items=self._items_of(messages), **self._notes)
        self._shown = ids
        self._post(type="controls", **self._controls())

    def _items_of(self, messages: list[Message], start: int = 0) -> list[dict[str, str]]:
        decided = self._session.decisions
        self._html.keep_only(messages)
        return _items(messages, start, decided, self._html)

    def _end(self, **notes: Any) -> None:
        self._notes = notes
        self._post(type="end", **notes)

    async def _turn(
        self,
        prompt: str | None,
        *,
        target: Session | None = None,
        finish: Callable[[str | None], str | None] | None = None,
        again: Callable[[], Any] | None = None,
    ) -> Any:
        """One turn streamed into the panel: `prompt` (None: resume the approved calls) on
        `target` (the panel's session, or a copy that `finish` then puts in its place).
        After an error, Retry calls `again` (by default: send `prompt` again)."""
        session = target or self._session
        before = [m.id for m in session.messages]
        started = time.monotonic()
        response, problem, failed = None, None, False
        self._started = True
        try:
            if self._stop_early:
                raise asyncio.CancelledError
            self.busy = True
            self._notes = {}
            self._again = None
            self._post(type="start", user=render.html(prompt) if prompt else "")
            response = await self._stream(session, prompt)
        except asyncio.CancelledError:
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            kept = [m.id for m in session.messages] != before
            problem = "stopped: " + (
                "the partial answer is kept" if kept else "nothing had arrived, nothing kept"
            )
        except AgentError as exc:
            problem, failed = str(exc), True
        except Exception as exc:  # shown inline; the session's rules kept its history whole
            problem, failed = f"{type(exc).__name__}: {exc}", True
        finally:
            self._task = None
            try:
                if finish is not None:
                    problem = finish(problem)
            finally:
                self.busy = False
        waited = prompt is None and session is self._session
        if waited and [m.id for m in session.messages] != before:
            self._note_turn(before, resumed=True)
        elif not waited:
            self._note_turn(before)
        if response is not None and response.messages:
            self._seconds[response.messages[-1].id] = time.monotonic() - started
        if failed and again is None and prompt:
            again = functools.partial(self.send, prompt)
        self._again = again if failed else None
        self._sync()
        error = f"<p>{render.escaped(problem)}</p>" if problem else ""
        self._end(error=error, retry=self._again is not None)
        self._refresh_fallback()
        return response

    async def _stream(self, session: Session, prompt: str | None) -> Any:
        live = _LiveTail(self._post)
        stream = session.stream_async(prompt) if prompt else session.stream_resume_async()
        # by call id: a result's card shows its call's arguments too (a resume's calls are
        # the waiting ones: no tool_call event comes for them)
        arguments = {c.id: c.arguments_json() for c in session.pending_approvals}
        async for event in stream:
            if event.type == "text_delta":
                live.text(event.text)
            elif event.type == "tool_call":
                arguments[event.id] = event.arguments
                live.block(_panel_cards.tool_card(event.id, event.name, event.arguments))
            elif event.type == "tool_result":
                call = event.tool_call_id
                result = ToolResultPart(
                    tool_call_id=call,
                    name=event.name,
                    content=event.content,
                    is_error=event.is_error,
                )
                shown = _panel_cards.tool_card(call, event.name, arguments.get(call, {}), result)
                self._post(type="card", call=call, html=shown)  # in place of the call's card
        return stream.response

    def _undo(self) -> None:
        """Drop the session's last turn (the Undo button)."""
        if self.busy:
            return
        try:
            removed = self._session.undo()
        except AgentError as exc:  # a store that failed: the session is as it was
            self._end(error=f"<p>{render.escaped(str(exc))}</p>")
            return
        self._notes = {}
        if removed:
            self._note(_panel_records.undo(self._session, list(removed.messages)))
        self._sync()
        if not removed:
            self._end(error="<p>nothing to undo</p>")
        self._refresh_fallback()

    # -- the panel's log (its record in the notebook) -------------------------------------------

    def _note(self, entry: dict[str, Any]) -> None:
        self._log.entries.append(entry)
        self._log.session_id = self._session.session_id

    def _note_turn(self, before: list[str], *, resumed: bool = False) -> None:
        """Log the turn just made, if it was asked for in the panel (a cell's code that sends
        makes its turn again when it runs again); `resumed`: it replaced the waiting round."""
        if resumed:  # the round that waited is the last of `before`, replaced once anything ran
            before = before[:-1]
        messages = self._session.messages
        made = messages[len(before) :]
        if not (self._logged and made and [m.id for m in messages[: len(before)]] == before):
            return
        if resumed:
            self._note(_panel_records.resume(self._session, made))
        else:
            self._note(_panel_records.turn(self._session, made))

    # -- other turns on the session ----------------------------------------------------------

    def _listen(self) -> None:
        try:
            from IPython import get_ipython
        except ImportError:  # pragma: no cover - IPython is a dependency
            return
        shell = get_ipython()
        if shell is None:
            return
        listener = _AfterCell(self)
        shell.events.register("post_run_cell", listener)
        listener.shell = shell

    def _after_cell(self) -> None:
        if not self.busy and [m.id for m in self._session.messages] != self._shown:
            self._notes = {}  # the panel's last footer or error is not about this turn
            self._sync()
            self._refresh_fallback()


class _Handler:
    """Messages from the front end (held weakly: a closed panel is not kept alive)."""

    def __init__(self, panel: ChatPanel) -> None:
        self._panel = weakref.ref(panel)

    def __call__(self, widget: Any, content: Any, buffers: Any) -> None:
        panel = self._panel()
        if panel is None or not isinstance(content, dict):
            return
        kind = content.get("type")
        if kind == "hello":
            panel._sync(reset=True)
        elif kind == "stop":
            panel.stop()
        elif kind == "undo":
            panel._undo()
        elif kind == "send":
            text = content.get("text")
            if isinstance(text, str) and text.strip() and not panel.busy:
                if "edit" in content:
                    panel._send_edited(content["edit"], text)
                else:
                    panel.send(text)
        elif kind in ("approve", "deny"):
            panel._decide(content.get("call"), kind == "approve", content.get("id"))
        elif kind == "regenerate":
            panel._regenerate(content.get("id"))
        elif kind == "edit":
            panel._edit(content.get("id"))
        elif kind == "retry":
            panel._retry()
        elif kind == "switch":
            panel._choose(content.get("session"))
        elif kind == "new":
            panel._new_session()


class _AfterCell:
    """IPython's post_run_cell: show turns made in the cell; gone with its panel."""

    def __init__(self, panel: ChatPanel) -> None:
        self._panel = weakref.ref(panel)
        self.shell: Any = None

    def __call__(self, result: Any = None) -> None:
        panel = self._panel()
        if panel is None or panel.comm is None:
            if self.shell is not None:
                self.shell.events.unregister("post_run_cell", self)
            return
        panel._after_cell()


class _LiveTail:
    """The streaming answer as deltas: finished blocks rendered once, the tail re-rendered.

    Blocks are cut where Markdown allows (live.py's rules); the tail is re-sent at most every
    UPDATE_INTERVAL and only while the bytes stay within live.py's budget, so a long answer
    costs a few times its size, not its square.
    """

    def __init__(self, post: Any) -> None:
        self._post = post
        self._tail = ""
        self._done: list[str] = []
        self._blocks = _Blocks()
        self._received = 0
        self._sent = 0
        self._last = 0.0

    def text(self, delta: str) -> None:
        self._tail += delta
        self._received += len(delta)
        cut = self._blocks.last_cut(self._tail)
        if cut:
            self._done.append(render.html(self._tail[:cut]))
            self._tail = self._tail[cut:]
            self._blocks.shift(cut)
        self._flush()

    def block(self, shown: str) -> None:
        """A whole block of HTML (a tool call): the text before it is finished."""
        if self._tail:
            self._done.append(render.html(self._tail))
        self._tail = ""
        self._blocks = _Blocks()
        self._done.append(shown)
        self._flush(force=True)

    def _flush(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < UPDATE_INTERVAL:
            return
        budget = BYTE_BUDGET * self._received + BYTE_ALLOWANCE
        tail = None  # over budget (its HTML is no shorter than its text): finished blocks only
        if self._sent + MESSAGE_BYTES + len(self._tail) <= budget:
            tail = render.html(self._tail) if self._tail else ""
        elif not self._done:
            return
        done = "".join(self._done)
        self._done = []
        self._post(type="delta", done=done, tail=tail)
        self._sent += MESSAGE_BYTES + len(done) + len(tail or "")
        self._last = now


def _items(
    messages: list[Message], start: int, decided: dict[str, bool], rendered: RenderedMessages
) -> list[dict[str, str]]:
    """Messages from `start` on as the panel shows them: {"id", "role", "html"}, tool
    results inside their calls' cards; `decided`: calls approved or denied, still waiting."""
    waiting = _panel_cards.waiting_ids(messages)
    items = []
    for at in range(start, len(messages)):
        message = messages[at]
        if message.role == "assistant":
            # a round's results are in the message after it (servers reuse call ids)
            after = messages[at + 1] if at + 1 < len(messages) else None
            results = {r.tool_call_id: r for r in after.tool_results} if after else {}
            last_round = at == len(messages) - 2
            calls = [c.id for c in message.tool_calls]
            key = (
                tuple(results.get(c) for c in calls),
                last_round and tuple((c in waiting, decided.get(c)) for c in calls),
            )
            shown = rendered.get(
                message,
                key,
                _panel_cards.answer_html,
                message,
                results,
                waiting if last_round else set(),
                decided if last_round else {},
                rendered.markdown,
            )
        elif message.role in ("user", "system"):
            shown = rendered.get(message, None, render.message_html, message, {}, rendered.markdown)
        else:
            continue
        if shown:
            items.append({"id": message.id, "role": message.role, "html": shown})
    return items
