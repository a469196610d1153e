"""Sessions kept inside a notebook file, in `metadata["agent_nb"]["sessions"]`."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InvalidSessionData, StoreError
from . import _ipynb
from .base import (
    TOO_DEEP,
    SessionInfo,
    SessionStore,
    assemble,
    check_data,
    check_key,
    check_page,
    info_of,
    newest_first,
    on_worker,
    problem,
    unreadable,
)

#: The notebook metadata key agent_nb owns.
KEY = "agent_nb"

_log = logging.getLogger("agent_nb")


class NotebookStore(SessionStore):
    """Sessions in a .ipynb file's metadata; every other part of the notebook is left as it was.

    Each save rewrites the file atomically (a temporary file renamed over it), under a lock
    file that serializes writers, and checks the result with nbformat.validate first. A file
    that does not exist yet is created as an empty notebook on the first save.

    Jupyter writes the whole notebook when the user saves it: save into a notebook that is
    not open in an editor, or reload it there afterwards (the `%%chat` magic keeps each turn
    in its cell's output metadata instead, which travels through the editor).

    A notebook can come from anyone: a session loaded from one lets no tool run without
    asking (its `allowed_tools` are left out, with a warning naming them), as a restore
    from a notebook's records does.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"NotebookStore({str(self.path)!r})"

    def _attempt(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except OSError as exc:
            raise StoreError(
                f"{self!r} failed ({problem(exc)}); check that the file and its folder can be "
                "read and written, and that the disk is not full"
            ) from None

    @on_worker
    def save(self, session_id: str, data: dict[str, Any]) -> None:
        check_key(session_id)
        check_data(data)
        with self._locked():
            notebook = self._read(create=True)
            sessions = self._sessions(notebook, create=True)
            try:
                sessions[session_id] = data  # a NotebookNode copy
            except RecursionError:
                raise ValueError(TOO_DEEP) from None
            self._write(notebook)

    @on_worker
    def load(self, session_id: str) -> dict[str, Any] | None:
        check_key(session_id)
        with self._lock:
            notebook = self._read()
        data = self._checked(notebook, session_id)
        allowed = data.pop("allowed_tools", None) if data is not None else None
        if allowed:
            _log.warning(
                "agent_nb: session %r in %r had tools allowed without asking (%s); a notebook "
                "can come from anyone, so they ask again: approve with always=True to allow "
                "them once more",
                session_id,
                self,
                ", ".join(map(str, allowed)) if isinstance(allowed, list) else allowed,
            )
        return data

    @on_worker
    def sessions(self, limit: int | None = None, offset: int = 0) -> list[SessionInfo]:
        check_page(limit, offset)
        with self._lock:
            notebook = self._read()
        infos = []
        for session_id in self._sessions(notebook):
            try:
                infos.append(info_of(session_id, self._checked(notebook, session_id)))
            except InvalidSessionData:
                infos.append(unreadable(session_id))
        return newest_first(infos, limit, offset)

    def _checked(self, notebook: _ipynb.Notebook | None, session_id: str) -> dict[str, Any] | None:
        sessions = self._sessions(notebook)
        if session_id not in sessions:
            return None
        assert notebook is not None
        damaged = notebook.damaged_sessions.get(session_id)
        problem = damaged.problem if damaged else None
        data = sessions[session_id]
        messages = data.get("messages", []) if isinstance(data, dict) else None
        if problem is None and not isinstance(messages, list):
            problem = "it is not session data with a list of messages"
        if problem is not None:
            raise InvalidSessionData(
                f"session {session_id!r} in {self!r} is corrupt: {problem}; "
                f"delete it with store.delete({session_id!r})"
            )
        return assemble(session_id, repr(self), data, messages)

    @on_worker
    def delete(self, session_id: str) -> bool:
        check_key(session_id)
        with self._locked():
            notebook = self._read()
            sessions = self._sessions(notebook)
            if session_id not in sessions:
                return False
            del sessions[session_id]
            self._write(notebook)
        return True

    @on_worker
    def list_sessions(self) -> list[str]:
        with self._lock:
            notebook = self._read()
        return list(self._sessions(notebook))

    @on_worker
    def __contains__(self, session_id: str) -> bool:
        check_key(session_id)
        with self._lock:
            notebook = self._read()
        return session_id in self._sessions(notebook)

    # -- the file --------------------------------------------------------------------------

    def _read(self, *, create: bool = False) -> _ipynb.Notebook | None:
        """The notebook (read part by part if need be); None if there is none to read."""
        import nbformat

        if not self.path.exists():
            return _ipynb.Notebook(nbformat.v4.new_notebook()) if create else None
        try:
            return _ipynb.read(self.path.read_text(encoding="utf-8"), nbformat.NO_CONVERT)
        except (_ipynb.UnreadableNotebook, UnicodeDecodeError) as exc:
            raise InvalidSessionData(
                f"{self.path} cannot be read as a notebook ({exc}); it was left as it is"
            ) from None

    def _sessions(self, notebook: _ipynb.Notebook | None, *, create: bool = False) -> Any:
        if notebook is None:
            return {}
        node = notebook.node
        metadata = node.setdefault("metadata", {}) if create else node.get("metadata")
        if not isinstance(metadata, dict):
            return {}
        ours = metadata.get(KEY)
        if not isinstance(ours, dict):
            if not create:
                return {}
            metadata[KEY] = {}
            ours = metadata[KEY]  # a NotebookNode copies what it is given
        sessions = ours.get("sessions")
        if not isinstance(sessions, dict):
            if not create:
                return {}
            ours["sessions"] = {}
            sessions = ours["sessions"]
        return sessions

    def _write(self, notebook: _ipynb.Notebook) -> None:
        import nbformat

        self._check_whole(notebook)
        node = notebook.node
        try:
            nbformat.validate(node)
        except nbformat.ValidationError as exc:
            raise InvalidSessionData(
                f"saving would leave {self.path} an invalid notebook ({exc.message}); "
                "the file was not changed"
            ) from None
        try:
            text = _ipynb.writes(notebook)
        except RecursionError:
            raise ValueError(TOO_DEEP) from None
        text += "" if text.endswith("\n") else "\n"  # as nbformat.write and Jupyter end it
        try:
            encoded = text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidSessionData(
                f"the session has text that UTF-8 cannot encode (a lone surrogate, "
                f"{text[max(0, _bad(text) - 20) : _bad(text) + 1]!r}), so it cannot be written "
                f"to {self.path}; the file was not changed"
            ) from None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(encoded)
                file.flush()
                os.fsync(file.fileno())
            if self.path.exists():
                os.chmod(temporary, self.path.stat().st_mode & 0o777)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def _check_whole(self, notebook: _ipynb.Notebook) -> None:
        """Refuse to write a file with a cell that could not be read: it would be lost."""
        if notebook.damaged_cells:
            index, problem = next(iter(notebook.damaged_cells.items()))
            raise InvalidSessionData(
                f"cell {index + 1} of {self.path} cannot be read ({problem}), and writing the "
                "file would lose it; repair the file first. The file was not changed"
            )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """This process's lock, and a lock file for other processes writing the notebook."""
        with self._lock:
            try:
                import fcntl
            except ImportError:  # Windows: writers in other processes are not serialized
                yield
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock_path = self.path.with_name(f".{self.path.name}.agent_nb.lock")
            with open(lock_path, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)


def _bad(text: str) -> int:
    """Where the first character UTF-8 cannot encode is."""
    for index, char in enumerate(text):
        if "\ud800" <= char <= "\udfff":
            return index
    return 0
