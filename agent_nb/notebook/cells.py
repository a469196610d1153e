"""Which cell made which turn or fork, so that a cell run again replaces what it made.

A cell is known by the id the front end sends with each execution (JupyterLab, Notebook 7,
VS Code). Where none is sent (nbclient, papermill), a cell is matched by its text to what a
restored record says a cell with that text made, each record once, in notebook order.
"""

from __future__ import annotations

from typing import Any

from .persist import Made


class Cells:
    """The cell running now, and what each known cell made."""

    def __init__(self) -> None:
        self.cell_id: str | None = None
        self.source = ""
        self._made_here = 0  # turns and forks the running cell has made so far
        self._key: str | None = None
        self._by_id: dict[str, Made] = {}  # by cell id and place in its cell ("id/0", "id/1")
        self._restored: list[Made] = []  # matched by text when no id is sent, each once
        self._remade: set[str] = set()  # first ids of turns whose cell has run again
        # kept session -> (first ids of its turns not yet made again, its message ids when kept)
        self._waiting: dict[str, tuple[set[str], list[str]]] = {}

    def before_cell(self, info: Any) -> None:
        """IPython's pre_run_cell event: remember which cell runs."""
        cell_id = getattr(info, "cell_id", None)
        self.cell_id = cell_id if isinstance(cell_id, str) and cell_id else None
        self.source = getattr(info, "raw_cell", "") or ""
        self._made_here = 0
        self._key = None

    def restored(self, made: list[Made]) -> None:
        """What the records of a restored notebook say its cells made."""
        places: dict[str, int] = {}
        for item in made:
            if item.cell_id is not None:
                place = places[item.cell_id] = places.get(item.cell_id, -1) + 1
                self._by_id[f"{item.cell_id}/{place}"] = item
            self._restored.append(item)

    def previous(self) -> Made | None:
        """What the running cell made before, if it is a cell run again (claimed once).

        Called once for each turn or fork the cell makes (a loop in a cell can make several).
        """
        found = None
        self._key = f"{self.cell_id}/{self._made_here}" if self.cell_id is not None else None
        self._made_here += 1
        if self._key is not None:
            found = self._by_id.get(self._key)
            if found in self._restored:
                self._restored.remove(found)
        else:
            found = next((m for m in self._restored if m.source == self.source), None)
            if found is not None:
                self._restored.remove(found)
                for key in [k for k, item in self._by_id.items() if item is found]:
                    del self._by_id[key]  # claimed: it is made again, not by an id
        if found is not None and found.first_id:
            self._remade.add(found.first_id)
        return found

    def made(self, session_id: str, first_id: str | None) -> None:
        """The running cell made this turn (first message `first_id`) or fork."""
        if self._key is not None:
            self._by_id[self._key] = Made(session_id, first_id, self.cell_id, self.source)

    def unmade(self, first_ids: set[str]) -> set[str]:
        """Those of these turns whose cell has not run again (or that no cell made)."""
        return first_ids - self._remade

    def keep(self, session_id: str, first_ids: set[str], history: list[str]) -> None:
        """Session `session_id` (message ids `history`) keeps these turns until their cells
        have made them again; then it can go, if it is still as it was kept."""
        if first_ids:
            self._waiting[session_id] = (set(first_ids), list(history))

    def superseded(self, previous: Made | None, sessions: dict[str, Any]) -> list[str]:
        """The kept sessions that can go once the cell that made `previous` has run again."""
        if previous is None or not previous.first_id:
            return []
        return [
            session_id
            for session_id, (waiting, history) in self._waiting.items()
            if waiting <= {previous.first_id}
            and session_id in sessions
            and [m.id for m in sessions[session_id].messages] == history
        ]

    def made_again(self, previous: Made | None) -> None:
        """The cell that made `previous` has run again: its kept turn waits no longer."""
        if previous is None or not previous.first_id:
            return
        for session_id, (waiting, _) in list(self._waiting.items()):
            waiting.discard(previous.first_id)
            if not waiting:
                del self._waiting[session_id]

    def moved(self, old_first: str, new_first: str) -> None:
        """A turn was answered again (%session retry): its cell made the new one."""
        for item in [*self._by_id.values(), *self._restored]:
            if item.first_id == old_first:
                item.first_id = new_first

    def forget(self, session_id: str) -> None:
        self._waiting.pop(session_id, None)
