"""The contract every session store keeps."""

from __future__ import annotations

import abc
from typing import Any


class SessionStore(abc.ABC):
    """Keeps serialized sessions (`Session.to_dict()` data) by session id."""

    @abc.abstractmethod
    def save(self, session_id: str, data: dict[str, Any]) -> None:
        """Store `data` under `session_id`, replacing what was there."""

    @abc.abstractmethod
    def load(self, session_id: str) -> dict[str, Any] | None:
        """The data stored under `session_id`, or None."""

    @abc.abstractmethod
    def delete(self, session_id: str) -> bool:
        """Forget `session_id`; True if it was there."""

    @abc.abstractmethod
    def list_sessions(self) -> list[str]:
        """The stored session ids."""

    def __contains__(self, session_id: str) -> bool:
        return self.load(session_id) is not None


def check_key(session_id: Any) -> str:
    if not isinstance(session_id, str) or not session_id:
        raise TypeError(f"session_id must be a non-empty str, got {session_id!r}")
    return session_id


def check_data(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise TypeError(f"a store saves the dict from Session.to_dict(), got {type(data).__name__}")
    return data
