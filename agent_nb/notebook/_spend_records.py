"""Which spend each record carries, so that a notebook's records hold every session's whole
ledger: a record carries its session's entries that no record carries yet, and a cell run
again (which replaces its output, its record with it) carries again what its old record did.

A record is known by its cell id (JupyterLab, Notebook 7, VS Code) and by the first message
of the turn it made (the only mark where no cell id is sent: nbclient). A restore seeds both
from the records it replayed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._ledger import Spend
    from ..session import Session


class SpendRecords:
    """The spend the notebook's records carry, and what each record carried."""

    def __init__(self) -> None:
        self._carried: set[Spend] = set()
        self._of: dict[str, list[Spend]] = {}  # a record's cell id or first message id -> its

    def restored(self, sessions: Iterable[Session], spend_of: dict[str, list[Any]]) -> None:
        """A restore: the rebuilt sessions' ledgers are in records already."""
        from .._ledger import spend_of as spend

        for session in sessions:
            self._carried.update(session.ledger)
        for key, entries in spend_of.items():
            self._of[key] = [spend(entry) for entry in entries]

    def carry(
        self, session: Session, replaces: Iterable[str | None], known_as: Iterable[str | None]
    ) -> list[dict[str, Any]]:
        """What a new record of `session` carries (as `to_dict()` writes each entry): the
        entries no record carries yet, and what the records it `replaces` (by cell id, by
        the first message id of their turn) carried; the record is then `known_as` these."""
        again = [s for key in replaces if key is not None for s in self._of.get(key, ())]
        new = [s for s in session.ledger if s not in self._carried]
        self._carried.update(new)
        entries = list(dict.fromkeys(again + new))
        for key in known_as:
            if key is not None:
                self._of[key] = entries
        return [s.to_dict() for s in entries]
