"""The HTML of ChatPanel's items that is more than Markdown: tool-call cards and the footer.

Every piece of text in it (a tool's name, arguments and result, call ids, the model's name)
is escaped into a fixed template, so it is as inert as render.py's output; a card
waiting for approval has a place (`data-call`) where panel.js puts Approve and Deny.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from ... import _render as render
from ..._ledger import MOST, dollars
from ...messages import tool_server
from .. import _gauge, _routing

if TYPE_CHECKING:
    from ..._context import ContextReport
    from ...messages import Message, ToolResultPart

#: What a card says of its call, by state.
_STATES = {
    "running": "running…",
    "done": "done",
    "error": "error",
    "waiting": "needs your approval",
    "approved": "approved: runs when the other calls are decided",
    "denied": "denied: the model is told when the other calls are decided",
}


def _attr(text: str) -> str:
    return html.escape(render.clean(text), quote=True)


def tool_card(
    call_id: str,
    name: str,
    arguments: Any,
    result: ToolResultPart | None = None,
    state: str | None = None,
    server: str | None = None,
) -> str:
    """One tool call as a collapsible card: arguments, result or error, Approve / Deny;
    `server`: the MCP server its tool is from, named after the tool's name."""
    if state is None:
        state = "running" if result is None else "error" if result.is_error else "done"
    try:
        shown_args = json.dumps(arguments, ensure_ascii=False, indent=2)
    except (TypeError, ValueError):
        shown_args = repr(arguments)
    opened = " open" if state in ("waiting", "error") else ""
    mark = "⚠️" if state == "error" else "🔧"
    parts = [
        f'<details class="agent-nb-panel-tool agent-nb-panel-tool-{state}"'
        f' data-call="{_attr(call_id)}"{opened}>',
        f"<summary>{mark} <code>{render.escaped(name)}</code>{render.from_server(server)} "
        f'<span class="agent-nb-panel-tool-state">{_STATES.get(state, state)}</span></summary>',
        '<div class="agent-nb-panel-tool-label">arguments</div>',
        f"<pre><code>{render.escaped(shown_args)}</code></pre>",
    ]
    if result is not None:
        label = "error" if result.is_error else "result"
        parts.append(f'<div class="agent-nb-panel-tool-label">{label}</div>')
        parts.append(f"<pre><code>{render.escaped(result.content)}</code></pre>")
    if state == "waiting":  # panel.js puts Approve and Deny here (no button in model HTML)
        parts.append(
            f'<div class="agent-nb-panel-approval" data-call="{_attr(call_id)}"'
            f' data-tool="{_attr(name)}"></div>'
        )
    parts.append("</details>\n")
    return "".join(parts)


def answer_html(
    message: Message,
    results: Mapping[str, ToolResultPart],
    waiting: set[str],
    decided: Mapping[str, bool],
    markdown: Callable[[str], str] = render.html,
) -> str:
    """An assistant message: its text as Markdown, then a card for each of its tool calls.

    `waiting`: ids of the calls waiting for approval; `decided`: those already approved (True)
    or denied (False) while others still wait; `markdown` renders the text.
    """
    shown = markdown(message.text) if message.text else ""
    sources = message.metadata.get("tool_sources")
    for call in message.tool_calls:
        state = None
        if call.id in decided:
            state = "approved" if decided[call.id] else "denied"
        elif call.id in waiting:
            state = "waiting"
        server = tool_server(sources, call.id)
        result = results.get(call.id)
        shown += tool_card(call.id, call.name, call.arguments_json(), result, state, server)
    return shown


def waiting_ids(messages: list[Message]) -> set[str]:
    """The ids of the calls the history's last round waits on (see Session.pending_approvals)."""
    waiting = messages[-1].metadata.get("awaiting_approval") if messages else None
    return set(waiting) if isinstance(waiting, tuple | list) else set()


def footer(
    messages: list[Message],
    model: str | None,
    seconds: float | None,
    updated: str | None,
    spent: Any = None,
    context: ContextReport | None = None,
) -> str:
    """The panel's footer from the history: the last answer's model; the last turn's tokens
    and cost; what the session spent in all (`spent`, its Cost); the context window's gauge
    (`context`: `session.context()`, as under a %%chat cell); and how long the last turn
    took (when this panel saw it; else when the session last changed, `updated`, ISO 8601).
    Under it, the notice of a last request the server cut in silence."""
    last_model, last, cost, estimated = None, None, None, False
    for message in messages:
        usage = message.metadata.get("usage") if message.role == "assistant" else None
        if message.role == "user":
            last, cost = None, None  # the last turn: from its first answer on
        if not isinstance(usage, Mapping):
            continue
        tokens = [_count(usage.get("input_tokens")), _count(usage.get("output_tokens"))]
        last = [a + b for a, b in zip(last or [0, 0], tokens, strict=True)]
        cost = _add_cost(cost, message.metadata.get("cost"))
        estimated = estimated or bool(usage.get("estimated"))
        if isinstance(message.metadata.get("model"), str):
            last_model = message.metadata["model"]
    about = "~" if estimated else ""
    facts = [f"<code>{render.escaped(str(last_model or model or '?'))}</code>"]
    if last:
        priced = f", {about}{dollars(cost)}" if cost else ""
        facts.append(f"last turn {about}{last[0]:,} in · {about}{last[1]:,} out tokens{priced}")
    if spent is not None and spent.worth_saying:
        facts.append(f"session spent {render.escaped(str(spent))}")
    facts.extend(_gauge.facts(context, _gauge.PANEL_WARNING))
    facts.extend(_routing.facts(_gauge.last_turn(messages)))  # after a switch
    if seconds is not None:
        facts.append(f"{seconds:.1f} s")
    elif updated and messages:
        facts.append(f"updated {render.escaped(updated[:16].replace('T', ' '))}")
    problem = _gauge.cut(_gauge.last_turn(messages))
    return " · ".join(facts) + (_gauge.notice(problem, _gauge.PANEL_WARNING)[0] if problem else "")


def _add_cost(total: Decimal | None, cost: Any) -> Decimal | None:
    """`total` plus a message's recorded cost (a decimal string), if it has a valid one."""
    if not isinstance(cost, str):
        return total
    try:
        value = Decimal(cost)
    except InvalidOperation:
        return total
    if not value.is_finite() or not 0 <= value < MOST:
        return total
    return value if total is None else total + value


def _count(value: Any) -> int:
    return value if type(value) is int and value >= 0 else 0
