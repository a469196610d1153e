"""A turn's spending: each request it sends goes in the ledger as it ends (answered, failed
or stopped), and the budgets are checked before each request (see docs/cost.md)."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from . import _prices
from ._ledger import Cost, dollars
from .errors import BudgetExceeded
from .events import Completion, Usage

if TYPE_CHECKING:
    from ._turn import Settings, TurnState
    from .providers.base import Request

#: The settings that cap a request's output, as the providers take them.
_OUTPUT_CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def answered(state: TurnState, settings: Settings, completion: Completion) -> None:
    """Put the request that `completion` answered in the ledger."""
    agent = state.session.agent
    state.record(
        _prices.priced(
            agent.provider,
            settings.model,
            completion.model,
            completion.usage,
            why=state.why,
            price=agent.price,
            message=completion.message.id,
        )
    )


def cut_short(state: TurnState, settings: Settings, request: Request, began: bool) -> None:
    """Put a request that ended without its answer in the ledger, if the server had begun to
    answer (`began`: any of its stream arrived, shown or not, a tool call's say): its usage
    estimated (~4 characters a token), since none was reported. A request refused before
    any answer (an error status) is not billed, so not counted."""
    if not began:
        return
    said = sum(map(len, state.pending)) + state.thought
    usage = Usage(input_tokens=_sent(state), output_tokens=(said + 3) // 4, estimated=1)
    agent = state.session.agent
    state.record(
        _prices.priced(
            agent.provider, settings.model, None, usage, why=state.why, price=agent.price
        )
    )


def check(state: TurnState, settings: Settings, request: Request) -> None:
    """BudgetExceeded, before `request` is sent, if it would pass the session's budget (the
    agent's max_cost) or this call's (`max_cost=`): what was spent, plus the least the request
    can cost (its input, estimated, and its max output at the model's price)."""
    state.thought = 0
    session, agent = state.session, state.session.agent
    limits = []
    if agent.max_cost is not None:
        limits.append(("session", agent.max_cost, Cost.of(session._ledger).amount))
    if settings.max_cost is not None:
        limits.append(("call", settings.max_cost, Cost.of(state.spent).amount))
    if not limits:
        return
    sent, most = _sent(state), _max_output(request.settings)
    bound = _prices.would_cost(
        agent.provider, settings.model, Usage(input_tokens=sent, output_tokens=most), agent.price
    )
    for kind, limit, spent in limits:
        if bound is None or spent + bound > limit:
            raise BudgetExceeded(
                _refusal(session.session_id, settings.model, kind, limit, spent, bound, sent, most),
                limit=limit,
                spent=spent,
                bound=bound,
            )


def _refusal(
    session_id: str,
    model: str,
    kind: str,
    limit: Decimal,
    spent: Decimal,
    bound: Decimal | None,
    sent: int,
    most: int,
) -> str:
    where = f"session {session_id!r}" if kind == "session" else "this call"
    setting = "Agent(max_cost=...)" if kind == "session" else "max_cost=..."
    unchanged = "nothing was sent and the history is unchanged"
    if bound is None:
        return (
            f"{setting} is set but model {model!r} has no known price, so the budget cannot "
            f"be kept; {unchanged}. Give its price: Agent(price={{'input': ..., 'output': "
            "...}) in dollars per million tokens"
        )
    if spent > limit:
        reached = f"{where} has spent {dollars(spent)}, past its budget {dollars(limit)}"
    else:
        reached = (
            f"{where} has spent {dollars(spent)} of its budget {dollars(limit)}, and the next "
            f"request costs at least {dollars(bound)} (about {sent:,} input tokens"
            + (f" and up to {most:,} output tokens" if most else "")
            + f" at {model}'s price)"
        )
    how = (
        "raise it with Agent(max_cost=...) or start a new session"
        if kind == "session"
        else "raise it with max_cost=... on the call"
    )
    return (
        f"{reached}: the turn stopped before that request; {unchanged} (what was spent is "
        f"in session.spend()); {how}"
    )


def _sent(state: TurnState) -> int:
    """The input of the request about to be sent (or just sent), as the context counted it:
    the provider's reported counts where it has them, estimates elsewhere."""
    report = state.report
    return report.used if report is not None else 0


def _max_output(settings: dict[str, Any]) -> int:
    for name in _OUTPUT_CAPS:
        value = settings.get(name)
        if type(value) is int and value > 0:
            return value
    return 0
