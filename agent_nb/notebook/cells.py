"""Which cell made which turn or fork, so that a cell run again replaces what it made.

A cell is known by the id the front end sends with each execution (JupyterLab, Notebook 7,
VS Code). Where none is sent (nbclient, papermill, the classic Notebook), by its text and its
place: after a restore, by the saved records, each once, in notebook order; in the kernel, a
cell whose text has made as many turns as the saved notebook file has cells of that text is
one of them run again (the first after the one made last, else the first), and any other is
new. So without the notebook file (a kernel not told its path) a cell run again by hand adds a
turn; and what only a cell id tells apart: a hand re-run of the second of two cells of the
same text replaces the first one's turn, and a pasted copy not yet saved is taken as the
original run again.

The records of a restored notebook are in notebook order. In a run from the top (Restart and
Run All), when the cell of record j runs again and, since the cell of record i, a cell that
matched nothing ran for each record between i and j, those records were made by cells since
edited: no kept session waits for them any more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._records import Made


class Cells:
    """The cell running now, and what each known cell made."""

    def __init__(self, saved: Callable[[], list[str] | None] = lambda: None) -> None:
        self._saved = saved  # the code cells' text in the notebook file, if it is known
        self._saved_now: list[str] | bool | None = False  # read once a cell (False: not yet)
        self.cell_id: str | None = None
        self.source = ""
        self._made_here = 0  # turns and forks the running cell has made so far
        self._key: str | None = None
        self._by_id: dict[str, Made] = {}  # by cell id and place in its cell ("id/0", "id/1")
        self._records: list[Made] = []  # a restored notebook's, in notebook order
        self._unclaimed: list[Made] = []  # of those, the ones no cell has made again yet
        self._ran: list[Made] = []  # what cells made, in notebook order, new ones last
        self._at: Made | None = None  # the last of `_ran` that a cell with no id made
        self._found: Made | None = None  # what the running cell's coming turn replaces
        self._made_item: Made | None = None  # what the running cell made at this place
        self._strays = 0  # cells that matched nothing since the last record was made again
        self._last_record = -1  # the place of that record in `_records`
        self._remade: set[str] = set()  # first ids of turns whose cell has run again
        # kept session -> (first ids of its turns not yet made again, its message ids when kept)
        self._waiting: dict[str, tuple[set[str], list[str]]] = {}
        #: cell id -> the first message of the turn its `%session retry` made: a re-run of
        #: that cell that fails shows that turn's record again (its output replaces the old)
        self._retried: dict[str, str] = {}
        #: Whether the running cell's last turn or fork is the next saved record made again,
        #: every record above it made again first: Restart and Run All, going as it went.
        self.in_order = False

    def before_cell(self, info: Any) -> None:
        """IPython's pre_run_cell event: remember which cell runs."""
        cell_id = getattr(info, "cell_id", None)
        self.cell_id = cell_id if isinstance(cell_id, str) and cell_id else None
        self.source = getattr(info, "raw_cell", "") or ""
        self._made_here = 0
        self._saved_now = False  # the file may have been saved since the last cell
        self._key = None
        self._found = None
        self._made_item = None
        self.in_order = False

    def restored(self, made: list[Made], retried: dict[str, str]) -> None:
        """What the records of a restored notebook say its cells made (`retried`: cell id ->
        the first message of the turn its `%session retry` made)."""
        self._retried.update(retried)
        places: dict[str, int] = {}
        for item in made:
            if item.cell_id is not None:
                place = places[item.cell_id] = places.get(item.cell_id, -1) + 1
                self._by_id[f"{item.cell_id}/{place}"] = item
        self._records = list(made)
        self._unclaimed = list(made)
        self._ran = list(made)
        self._at, self._strays, self._last_record = None, 0, -1

    def previous(self, *, fork: bool = False) -> Made | None:
        """What the running cell made before, if it is a cell run again.

        Called once for each turn or fork the cell makes (a loop in a cell can make several);
        what it finds is taken only when `made()` is called (a turn that fails takes nothing).
        A `fork` with no cell id is matched only going down the notebook (Run All): a fork
        cell typed again by hand is refused as an existing name, not taken as a re-run.
        """
        place = self._made_here
        self._made_here += 1
        self._made_item = None
        self._key = f"{self.cell_id}/{place}" if self.cell_id is not None else None
        if self._key is not None:
            found = self._by_id.get(self._key)
        else:
            found = next((m for m in self._unclaimed if m.source == self.source), None)
            if found is None:
                found = self._same_text(place, forward_only=fork)
        self.in_order = False
        if found in self._unclaimed:
            self._skip_to(found)
            above = self._records[: self._records.index(found)]
            self.in_order = not any(m in self._unclaimed for m in above)
        if found is not None and found.first_id:
            self._remade.add(found.first_id)
        self._found = found
        return found

    def _same_text(self, place: int, *, forward_only: bool) -> Made | None:
        """The turn a cell with no id and this text made at this place in it, if the saved
        notebook has no more cells of this text than have made turns (else it is one of
        those, new); the first such after the one made last (cells running top to bottom),
        else the first."""
        same = [m for m in self._ran if m.source == self.source and m.place == place]
        if same and self._saved_now is False:  # a cell that makes several turns reads it once
            self._saved_now = self._saved()
        saved = self._saved_now if same else None
        if not isinstance(saved, list) or saved.count(self.source) > len(same):
            return None
        after = self._ran.index(self._at) + 1 if self._at in self._ran else 0
        since = self._ran[after:]
        later = [m for m in same if m in since]
        return (later or ([] if forward_only else same) or [None])[0]

    def made(self, session_id: str, first_id: str | None, renamed_from: str | None = None) -> None:
        """The running cell made this turn (first message `first_id`), fork or rename."""
        found, self._found = self._found, None
        from .._records import Made

        place = self._made_here - 1
        item = Made(session_id, first_id, self.cell_id, self.source, place, renamed_from)
        if self._made_item is not None:  # `%%chat --fork`: its fork, then its turn
            old, self._made_item = self._made_item, item
            for key in [k for k, m in self._by_id.items() if m is old]:
                self._by_id[key] = item
            if old in self._ran:
                self._ran[self._ran.index(old)] = item
            if self._at is old:
                self._at = item
            return
        self._made_item = item
        if found in self._unclaimed:
            self._unclaimed.remove(found)
            self._strays, self._last_record = 0, self._records.index(found)
        elif found is None:
            self._strays += 1
        if self._key is not None:
            self._by_id[self._key] = item
            return
        for key in [k for k, m in self._by_id.items() if m is found]:
            del self._by_id[key]  # made again by a cell with no id: not by that id
        if found in self._ran:
            self._ran[self._ran.index(found)] = item
        else:  # a new cell: most often typed at the end
            self._ran.append(item)
        self._at = item

    def _skip_to(self, found: Made) -> None:
        """The cell of record `found` runs again, in a run from the top (every earlier record
        made again); if, since the last one, as many cells that matched nothing ran as there
        are records between, those were made by cells since edited: none is waited for."""
        at = self._records.index(found)
        top_down = not any(m in self._unclaimed for m in self._records[: self._last_record + 1])
        skipped = [m for m in self._records[self._last_record + 1 : at] if m in self._unclaimed]
        if not (top_down and skipped and self._strays >= len(skipped)):
            return  # a cell run by hand further down: the ones between may yet run again
        for gone in skipped:
            self._unclaimed.remove(gone)
            if gone.first_id:
                self._remade.add(gone.first_id)
                self._stop_waiting(gone.first_id)

    def not_yet_made(self) -> set[str]:
        """In a run from the top that goes as the saved one went (some records made again,
        in order, others not yet): the sessions a fresh run would not have yet, those kept
        until later cells run again and those first made by a record not yet made again."""
        if self._last_record < 0 or not self._unclaimed:
            return set()
        if any(m in self._unclaimed for m in self._records[: self._last_record + 1]):
            return set()  # a cell run by hand further down: everything is as it is
        firsts: dict[str, Made] = {}
        for item in self._records:
            firsts.setdefault(item.session_id, item)
        later = {sid for sid, item in firsts.items() if item in self._unclaimed}
        return later | set(self._waiting)

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
        if previous is not None and previous.first_id:
            self._stop_waiting(previous.first_id)

    def _stop_waiting(self, first_id: str) -> None:
        for session_id, (waiting, _) in list(self._waiting.items()):
            waiting.discard(first_id)
            if not waiting:
                del self._waiting[session_id]

    def moved(self, old_first: str, new_first: str) -> None:
        """A turn was answered again (%session retry): its cell made the new one."""
        for item in [*self._by_id.values(), *self._records, *self._ran]:
            if item.first_id == old_first:
                item.first_id = new_first

    def retried(self, first_id: str) -> None:
        """The running cell's `%session retry` made the turn that starts at `first_id`."""
        if self.cell_id is not None:
            self._retried[self.cell_id] = first_id

    def retried_here(self, first_id: str) -> bool:
        """Whether the running cell's last `%session retry` made the turn at `first_id`."""
        return self._retried.get(self.cell_id or "") == first_id

    def renamed(self, old: str, new: str) -> None:
        """Session `old` is `new` now: what cells made in it, they made in `new`."""
        for item in {
            id(m): m for m in [*self._by_id.values(), *self._records, *self._ran]
        }.values():
            if item.session_id == old:
                item.session_id = new
        if old in self._waiting:
            self._waiting[new] = self._waiting.pop(old)

    def forget(self, session_id: str) -> None:
        self._waiting.pop(session_id, None)
