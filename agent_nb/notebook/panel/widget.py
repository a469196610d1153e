"""ChatPanel: a chat window on a Session, one anywidget model per panel.

The Session is the truth and the panel a view of it. Every piece of HTML the front end shows
is rendered and sanitized here (render.py); panel.js only inserts it. The panel and its views
talk in the messages protocol.py names; what the views ask is done by the panel's Controls
(controls.py), and the answer streams to them as deltas (stream.py).

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
from collections.abc import Callable, Sequence
from typing import Any

import anywidget
import traitlets

from ... import _render as render
from ...agent import Agent
from ...errors import AgentError
from ...messages import Message
from ...router import Router
from ...session import Session
from .. import _panel_records
from . import protocol
from .controls import Controls
from .items import RenderedMarkdown, RenderedMessages, items_of
from .protocol import ToView
from .stream import stream

_HERE = pathlib.Path(__file__).parent


class ChatPanel(anywidget.AnyWidget):
    """A chat window on a Session (or a new session of an Agent or a Router), inside the
    notebook."""

    _esm = _HERE / "panel.js"
    _css = _HERE / "panel.css"
    #: Synced to the front end: which session, and whether a turn is running.
    session_id = traitlets.Unicode("").tag(sync=True)
    busy = traitlets.Bool(False).tag(sync=True)
    #: Marks the panel's transcript output, which its live view hides.
    _fallback_id = traitlets.Unicode("").tag(sync=True)

    def __init__(self, session_or_agent: Session | Agent | Router, *, store: Any = None) -> None:
        if not isinstance(session_or_agent, Agent | Router | Session):
            raise TypeError(
                "ChatPanel takes a Session, an Agent or a Router (ChatPanel(agent.session()), "
                f"ChatPanel(agent) or ChatPanel(router)), got {type(session_or_agent).__name__}"
            )
        opened = _panel_records.open_panel(session_or_agent, store)  # its cell's, if it ran
        session = opened.session
        super().__init__(session_id=session.session_id, _fallback_id=uuid.uuid4().hex)
        self._store = opened.store
        self._sessions: dict[str, Session] = opened.sessions
        self._unowned = opened.unowned  # made by the notebook's log: no store until used
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
        self._controls = Controls(self)
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
        self._own(self._session)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(turn)
        self.busy = True  # at once: a second send before the task starts is refused
        self._started = self._stop_early = False
        self._logged = _panel_records.from_the_front_end()
        self._task = loop.create_task(turn)
        return self._task

    def _own(self, session: Session) -> None:
        """The user acts in `session`: one the notebook's log made saves to the store now."""
        _panel_records.own(session, self._store, self._unowned)

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
            # (a routed session's agent, its route, makes sessions of its Router)
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

    def _post(self, kind: ToView, **fields: Any) -> None:
        """A message to every view (Widget.send is the prompt here)."""
        self._send(protocol.message(kind, **fields))

    def _sync(self, *, reset: bool = False) -> None:
        """Bring the front end to the session's history: the new messages, or all of it."""
        messages = self._session.messages
        ids = [m.id for m in messages]
        if not reset and ids[: len(self._shown)] == self._shown:
            self._post(ToView.APPEND, items=self._items_of(messages, len(self._shown)))
        else:
            self._post(ToView.RESET, items=self._items_of(messages), **self._notes)
        self._shown = ids
        self._post(ToView.CONTROLS, **self._controls.state())

    def _resync(self) -> None:
        """Show the whole session again, without the last turn's notes."""
        self._notes = {}
        self._sync(reset=True)

    def _show_only(self, messages: list[Message]) -> None:
        """Show `messages` alone (the history before a prompt answered again)."""
        self._shown = [m.id for m in messages]
        self._post(ToView.RESET, items=self._items_of(messages))

    def _items_of(self, messages: list[Message], start: int = 0) -> list[dict[str, str]]:
        self._html.keep_only(messages)
        return items_of(messages, start, self._session.decisions, self._html)

    def _end(self, **notes: Any) -> None:
        self._notes = notes
        self._post(ToView.END, **notes)

    # -- a turn ------------------------------------------------------------------------------

    async def _turn(
        self,
        prompt: str | None,
        *,
        target: Session | None = None,
        finish: Callable[[str | None], str | None] | None = None,
        again: Callable[[], Any] | None = None,
        images: Sequence[Any] = (),
    ) -> Any:
        """One turn streamed into the panel: `prompt` (None: resume the approved calls), with
        `images`, on `target` (the panel's session, or a copy that `finish` then puts in its
        place). After an error, Retry calls `again` (by default: send `prompt` again)."""
        session = target or self._session
        before = [m.id for m in session.messages]
        spent_from = len(session.ledger)  # append-only: what the turn spends comes after
        started = time.monotonic()
        response, problem, failed = None, None, False
        self._started = True
        try:
            response = await self._answer(session, prompt, images)
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
        noted = len(self._log.entries)
        self._note_turn(session, prompt, before)
        self._note_spend(session.ledger[spent_from:], noted)
        if response is not None and response.messages:
            self._controls.seconds[response.messages[-1].id] = time.monotonic() - started
        if failed and again is None and prompt:
            again = functools.partial(self.send, prompt)
        self._controls.again = again if failed else None
        self._sync()
        error = f"<p>{render.escaped(problem)}</p>" if problem else ""
        self._end(error=error, retry=failed and again is not None)
        self._refresh_fallback()
        return response

    async def _answer(self, session: Session, prompt: str | None, images: Sequence[Any]) -> Any:
        if self._stop_early:  # stopped before it began
            raise asyncio.CancelledError
        self.busy = True
        self._notes = {}
        self._controls.again = None
        self._post(ToView.START, user=render.html(prompt) if prompt else "")
        return await stream(session, prompt, self._post, images)

    # -- the panel's log (its record in the notebook) -------------------------------------------

    def _note(self, entry: dict[str, Any]) -> None:
        self._log.entries.append(entry)
        self._log.session_id = self._session.session_id

    def _note_turn(self, session: Session, prompt: str | None, before: list[str]) -> None:
        """Log the turn just made on `session` from history `before`, if it was asked for in
        the panel (a cell's code that sends makes its turn again when it runs again). A
        resume (no `prompt`) replaced the round that waited, once anything ran."""
        resumed = prompt is None and session is self._session
        if resumed and [m.id for m in session.messages] == before:
            return  # nothing ran
        if resumed:  # the round that waited is the last of `before`
            before = before[:-1]
        messages = self._session.messages
        made = messages[len(before) :]
        if not (self._logged and made and [m.id for m in messages[: len(before)]] == before):
            return
        if resumed:
            self._note(_panel_records.resume(self._session, made))
        else:
            self._note(_panel_records.turn(self._session, made))

    def _note_spend(self, spent: tuple[Any, ...], noted: int) -> None:
        """Log what a turn asked for in the panel spent: with its turn's entry, or (a turn
        that failed or was stopped before anything was kept) in an entry of its own."""
        if not (self._logged and spent):
            return
        carried = [spend.to_dict() for spend in spent]
        if len(self._log.entries) > noted:
            self._log.entries[-1]["spend"] = carried
        else:
            self._note(_panel_records.spend(self._session, carried))

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
        if panel is not None:
            protocol.receive(panel._controls, content)


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
