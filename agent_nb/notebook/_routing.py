"""A Router where a notebook user looks: `%agent router`'s line, the note under the answer
after a switch (the %%chat and ChatPanel footers), %session info's lines, `%session route
status`'s table, and the quiet line when a session's recorded candidate is not the one its
router would choose now.

What a switch says comes from the answer's metadata, which a saved notebook carries (and
anyone may have written): every label and reason is escaped, cut short, and a reason is
said only if it is a status or one of the router's fixed words. The rest is fixed words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .. import _render as render
from ..router import Route, Router

if TYPE_CHECKING:
    from ..messages import Message
    from ..session import Session

#: The reasons a router gives for a switch (router.py's `_why`), and how the note says them.
_MOVED = {
    "reset": "moved from",
    "probe_back": "back from",
    "window": "moved from",
    "images": "moved from",
}
_WORDS = {"connection", "timeout", "window", "images", "reset", "probe_back"}
_LONGEST = 80  # a label longer than this is cut


def route_of(session: Session) -> Route | None:
    """The session's route, if it talks through a Router."""
    agent = session.agent
    return agent if isinstance(agent, Route) else None


def maker(agent: Any) -> Any:
    """What makes sessions like this one's: a route's Router, else the agent itself."""
    return agent.router if isinstance(agent, Route) else agent


def strategy_of(router: Router) -> str:
    return router.strategy if isinstance(router.strategy, str) else "custom"


def described(router: Router) -> str:
    """`%agent`'s line: "Router of openai:a, openai:b (fallback)"."""
    return f"Router of {', '.join(router.labels)} ({strategy_of(router)})"


def _label(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    line = render.one_line(value)
    return line if len(line) <= _LONGEST else line[: _LONGEST - 1] + "…"


def _reason(value: Any) -> str | None:
    """A switch's reason if it is one a router gives: an HTTP status or a fixed word."""
    if isinstance(value, str) and (value in _WORDS or re.fullmatch(r"[1-5]\d\d", value)):
        return value
    return None


def last_switch(messages: Iterable[Message]) -> dict[str, str] | None:
    """The last switch the answers in `messages` record: from, to, why (None if unsaid), at
    (an ISO time, or None) — each checked, none trusted."""
    found = None
    for message in messages:
        route = message.metadata.get("route") if message.role == "assistant" else None
        if not isinstance(route, Mapping):
            continue
        source, target = _label(route.get("from")), _label(route.get("to"))
        if source is None or target is None:
            continue
        at = route.get("at")
        at = at[:19].replace("T", " ") if isinstance(at, str) and re.match(r"\d{4}-", at) else None
        found = {"from": source, "to": target, "why": _reason(route.get("why")), "at": at}
    return found


def _switch_words(switch: dict[str, str | None]) -> tuple[str, str]:
    why = switch["why"]
    verb = _MOVED.get(why or "", "fell back from")
    return verb, f" ({why.replace('_', ' ')})" if why else ""


def facts(messages: Iterable[Message]) -> list[str]:
    """The footer's note (HTML) on the turn right after a switch: `fell back from
    <code>openai:a</code> (503)`; nothing on any other turn. `messages`: the turn's."""
    switch = last_switch(messages)
    if switch is None:
        return []
    verb, why = _switch_words(switch)
    return [f"{verb} <code>{render.escaped(switch['from'])}</code>{render.escaped(why)}"]


def info(session: Session) -> list[str]:
    """%session info's lines on a routed session: the candidate it is on, and the last
    switch its history records."""
    route = route_of(session)
    if route is None:
        return []
    router = route.router
    lines = [f"candidate: {route.label} (of {described(router)})"]
    switch = last_switch(session.messages)
    if switch is None:
        lines.append("last switch: none in this history")
    else:
        why = _switch_words(switch)[1]
        when = f" at {switch['at']} UTC" if switch["at"] else ""
        lines.append(f"last switch: {switch['from']} -> {switch['to']}{why}{when}")
    return lines


def status(router: Router) -> str:
    """`%session route status`: a line per candidate, under a header."""
    rows = [("candidate", "state", "failures", "median TTFT", "last error")]
    for row in router.status():
        state = "healthy" if row["healthy"] else f"cooling {row['cooling']:.0f} s"
        ttft = row["ttft"]
        measured = f"{ttft:.2f} s ({row['measured']})" if ttft is not None else "-"
        error = render.one_line(str(row["last_error"]))[:60] if row["last_error"] else "-"
        rows.append((row["candidate"], state, str(row["failures"]), measured, error))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def differs(session: Session) -> str | None:
    """The quiet line for a session whose recorded candidate is not the one its router's
    strategy would choose for it now (None: the same, or not said: round_robin and a
    function choose anew each time, and asking them would move them on)."""
    route = route_of(session)
    if route is None or route.router.strategy not in ("fallback", "fastest", "cheapest"):
        return None
    router = route.router
    answers = [m for m in session.messages if m.role == "assistant"]
    recorded = [
        m.metadata.get("candidate")
        for m in answers
        if router.index_of(m.metadata.get("candidate")) is not None
    ]
    if not recorded or route.label != recorded[-1]:
        return None  # (a new session's route is chosen at its first turn, not here)
    now = router.labels[router.choice(session)]
    if now == route.label:
        return None
    return (
        f"agent_nb: session {session.session_id!r} stays on {route.label}, as its history "
        f"records; its router would choose {now} now (%session route reset)"
    )


def pinned(session: Session, answer: Message | None) -> None:
    """A turn made again on `session` (a copy of the history before it) goes to the
    candidate its earlier answer came from, recording the same switch (Restart & Run All
    replays the recorded choice)."""
    route = route_of(session)
    if route is not None and answer is not None:
        route.replay(answer)
