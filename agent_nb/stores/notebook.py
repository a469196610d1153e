"""Sessions kept inside a notebook file, in `metadata["agent_nb"]["sessions"]`."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InvalidSessionData
from .base import (
    SessionInfo,
    SessionStore,
    assemble,
    check_data,
    check_key,
    check_page,
    info_of,
    newest_first,
    unreadable,
)

#: The notebook metadata key agent_nb owns.
KEY = "agent_nb"


class NotebookStore(SessionStore):
    """Sessions in a .ipynb file's metadata; every other part of the notebook is left as it was.

    Each save rewrites the file atomically (a temporary file renamed over it), under a lock
    file that serializes writers, and checks the result with nbformat.validate first. A file
    that does not exist yet is created as an empty notebook on the first save.

    Jupyter writes the whole notebook when the user saves it: save into a notebook that is
    not open in an editor, or reload it there afterwards (the `%%chat` magic keeps each turn
    in its cell's output metadata instead, which travels through the editor).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"NotebookStore({str(self.path)!r})"

    def save(self, session_id: str, data: dict[str, Any]) -> None:
        check_key(session_id)
        check_data(data)
        with self._locked():
            notebook = self._read(create=True)
            self._sessions(notebook, create=True)[session_id] = data  # a NotebookNode copy
            self._write(notebook)

    def load(self, session_id: str) -> dict[str, Any] | None:
        check_key(session_id)
        with self._lock:
            notebook = self._read()
        return self._checked(session_id, self._sessions(notebook).get(session_id))

    def sessions(self, limit: int | None = None, offset: int = 0) -> list[SessionInfo]:
        check_page(limit, offset)
        with self._lock:
            notebook = self._read()
        infos = []
        for session_id, data in self._sessions(notebook).items():
            try:
                infos.append(info_of(session_id, self._checked(session_id, data)))
            except InvalidSessionData:
                infos.append(unreadable(session_id))
        return newest_first(infos, limit, offset)

    def _checked(self, session_id: str, data: Any) -> dict[str, Any] | None:
        if data is None:
            return None
        messages = data.get("messages", []) if isinstance(data, dict) else None
        if not isinstance(messages, list):
            raise InvalidSessionData(
                f"session {session_id!r} in {self!r} is corrupt: it is not session data "
                f"with a list of messages; delete it with store.delete({session_id!r})"
            )
        return assemble(session_id, repr(self), data, messages)

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

    def list_sessions(self) -> list[str]:
        with self._lock:
            notebook = self._read()
        return list(self._sessions(notebook))

    # -- the file --------------------------------------------------------------------------

    def _read(self, *, create: bool = False) -> Any:
        import nbformat

        if not self.path.exists():
            return nbformat.v4.new_notebook() if create else None
        try:
            return nbformat.read(self.path, as_version=nbformat.NO_CONVERT)
        except Exception as exc:  # nbformat raises JSON, encoding and schema errors alike
            raise InvalidSessionData(
                f"{self.path} cannot be read as a notebook ({type(exc).__name__}: {exc}); "
                "it was left as it is"
            ) from None

    def _sessions(self, notebook: Any, *, create: bool = False) -> dict[str, Any]:
        if notebook is None:
            return {}
        metadata = notebook.setdefault("metadata", {}) if create else notebook.get("metadata")
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

    def _write(self, notebook: Any) -> None:
        import nbformat

        try:
            nbformat.validate(notebook)
        except nbformat.ValidationError as exc:
            raise InvalidSessionData(
                f"saving would leave {self.path} an invalid notebook ({exc.message}); "
                "the file was not changed"
            ) from None
        text = nbformat.writes(notebook)
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
