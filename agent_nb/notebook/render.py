"""How answers look in a notebook: live, throttled Markdown; transcripts; sanitized HTML."""

from __future__ import annotations

import html
import json
import re
import sys
import time
import uuid
from collections.abc import Iterable
from typing import Any

from ..messages import Message
from ..session import Response

#: The display is refreshed at most this often while an answer streams.
UPDATE_INTERVAL = 0.05

_FENCED = re.compile(r"^(```|~~~)[^\n]*\n.*?(?:^\1[ \t]*$|\Z)", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
_TAG = re.compile(r"<(/?[A-Za-z!?][^<>]*)>")
_UNSAFE_LINK = re.compile(
    r"\]\(\s*(?:javascript|vbscript|data):(?:[^()]|\([^()]*\))*\)", re.IGNORECASE
)
_UNSAFE_AUTOLINK = re.compile(r"<\s*(?:javascript|vbscript|data):[^>]*>", re.IGNORECASE)


def sanitize(markdown: str) -> str:
    """Model text made inert as HTML: tags are shown as text, script links are dropped.

    Code (fenced blocks and inline spans) is left alone: Markdown renders it literally.
    """
    out, position = [], 0
    for block in _FENCED.finditer(markdown):
        out.append(_sanitize_prose(markdown[position : block.start()]))
        out.append(block.group(0))
        position = block.end()
    out.append(_sanitize_prose(markdown[position:]))
    return "".join(out)


def _sanitize_prose(text: str) -> str:
    spans: list[str] = []

    def keep(match: re.Match[str]) -> str:
        spans.append(match.group(0))
        return f"\x00{len(spans) - 1}\x00"

    text = _CODE_SPAN.sub(keep, text)
    text = _UNSAFE_AUTOLINK.sub("", text)
    text = _UNSAFE_LINK.sub("](#unsafe-link-removed)", text)
    text = _TAG.sub(lambda m: html.escape(m.group(0)), text)
    return re.sub("\x00(\\d+)\x00", lambda m: spans[int(m.group(1))], text)


def footer(response: Response, seconds: float | None, *, interrupted: bool = False) -> str:
    facts = [f"`{response.model}`"] if response.model else []
    usage = response.usage
    if usage.input_tokens or usage.output_tokens:
        facts.append(f"{usage.input_tokens:,} in · {usage.output_tokens:,} out tokens")
    if seconds is not None:
        facts.append(f"{seconds:.1f} s")
    if interrupted:
        facts.append("**interrupted**: the partial answer is kept")
    if response.finish_reason == "length":
        facts.append("cut at max_tokens")
    return "<sub>" + " · ".join(facts) + "</sub>" if facts else ""


def tool_block(name: str, arguments: dict[str, Any], result: str | None, is_error: bool) -> str:
    """A collapsible block for one tool call and its result."""
    args = html.escape(json.dumps(arguments, ensure_ascii=False), quote=False)
    mark = "⚠️" if is_error else "🔧"
    body = "" if result is None else f"\n\n```\n{result.replace('```', '` ` `')}\n```\n"
    return f"<details><summary>{mark} {html.escape(name)}({args})</summary>{body}</details>\n\n"


def turn_markdown(messages: Iterable[Message]) -> str:
    """The Markdown of one turn's answer: tool blocks, then the text."""
    out = []
    results = {}
    messages = list(messages)
    for message in messages:
        for result in message.tool_results:
            results[result.tool_call_id] = result
    for message in messages:
        if message.role != "assistant":
            continue
        for call in message.tool_calls:
            result = results.get(call.id)
            out.append(
                tool_block(
                    call.name,
                    call.arguments_json(),
                    result.content if result else None,
                    bool(result and result.is_error),
                )
            )
        if message.text:
            out.append(sanitize(message.text))
    return "".join(out)


def transcript(messages: Iterable[Message], system: str | None = None) -> str:
    """A whole conversation as Markdown."""
    out = []
    if system:
        out.append(f"**system**: {sanitize(system)}\n\n")
    for message in messages:
        if message.role == "user":
            out.append(f"**you**: {sanitize(message.text)}\n\n")
        elif message.role == "assistant":
            text = turn_markdown([message])
            if text:
                out.append(f"**assistant**: {text}\n\n")
        elif message.role == "system":
            out.append(f"**system**: {sanitize(message.text)}\n\n")
    return "".join(out).rstrip() + "\n"


class LiveMarkdown:
    """A display that shows Markdown as it grows, refreshed at most every UPDATE_INTERVAL.

    In a kernel it updates one output through a display id; in a terminal it prints the new
    text as it comes.
    """

    def __init__(self, *, rich: bool) -> None:
        self.rich = rich
        self._display_id = uuid.uuid4().hex
        self._last = 0.0
        self._shown = False
        self._printed = 0

    def show(
        self,
        markdown: str,
        *,
        final: bool = False,
        metadata: dict | None = None,
        plain: str | None = None,
    ) -> None:
        """Show `markdown`; unless `final`, skip it if the last refresh was too recent."""
        now = time.monotonic()
        if not final and now - self._last < UPDATE_INTERVAL:
            return
        self._last = now
        if not self.rich:
            text = plain if plain is not None else markdown
            sys.stdout.write(text[self._printed :])
            self._printed = len(text)
            if final:
                sys.stdout.write("\n")
            sys.stdout.flush()
            return
        from IPython.display import display, update_display

        data = {"text/markdown": markdown, "text/plain": plain if plain is not None else markdown}
        if not self._shown:
            self._shown = True
            display(data, raw=True, display_id=self._display_id, metadata=metadata or {})
        else:
            update_display(data, raw=True, display_id=self._display_id, metadata=metadata or {})
