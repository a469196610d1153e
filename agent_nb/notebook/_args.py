"""The one argument parser of %agent, %%chat and every %session subcommand: an unknown flag
is an error that lists the valid ones, -h/--help prints the help, a new name must be a
session id (never a flag: `%session fork -h` forks nothing)."""

from __future__ import annotations

import argparse
import difflib
import re
from collections.abc import Iterable
from typing import Any

from ._errors import ChatError

#: A name the notebook gives a session: a letter, digit or _ first, then those or . - ~ @ +
_ID = re.compile(r"[^\W][\w.~@+-]{0,99}")


class Help(Exception):
    """-h/--help: the help is printed; nothing else happens."""


class Parser(argparse.ArgumentParser):
    """argparse, with errors as ChatError (naming the valid options) and help as `Help`."""

    def __init__(self, prog: str, description: str | None = None, usage: str | None = None) -> None:
        super().__init__(
            prog=prog,
            description=description,
            usage=usage,
            allow_abbrev=False,  # `--sys` is not taken for --system
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    def error(self, message: str) -> Any:
        raise ChatError(f"{self.prog}: {message}; {self.options()}")

    def exit(self, status: int = 0, message: str | None = None) -> Any:
        raise Help

    def options(self) -> str:
        """The valid options, as an error names them."""
        found = []
        for action in self._actions:
            if not action.option_strings or action.dest == "help":
                continue
            takes = f" {action.metavar or action.dest.upper()}" if action.nargs != 0 else ""
            found.append("/".join(action.option_strings) + takes)
        usage = self.format_usage().strip().removeprefix("usage: ")
        if not found:
            return f"usage: {usage} (no options but -h/--help)"
        return f"usage: {usage}; the options: {', '.join(found)}, -h/--help"

    def parse(self, words: list[str]) -> argparse.Namespace | None:
        """The parsed arguments; None if -h/--help printed the help."""
        try:
            return self.parse_args(words)
        except Help:
            return None


def new_id(text: str) -> str:
    """A name for a new session (argparse `type=`): a valid session id, or an error."""
    if not _ID.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} cannot name a session: use letters, digits, _ . - ~ @ + (up to 100, "
            "the first a letter, digit or _)"
        )
    return text


def identifier(text: str) -> str:
    """A Python variable name (argparse `type=`)."""
    if not text.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r} is not a Python variable name")
    return text


def positive(text: str) -> int:
    """A count of at least 1 (argparse `type=`)."""
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"takes a whole number of at least 1, got {text!r}")
    return number


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """' did you mean X?' when a known word is close to `word`, else ''."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" did you mean {close[0]!r}?" if close else ""
