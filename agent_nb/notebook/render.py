"""How answers look in a notebook: live, throttled Markdown; transcripts; sanitized HTML."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from typing import Any

from ..messages import Message
from ..session import Response

_FENCED = re.compile(r"^(```|~~~)[^\n]*\n.*?(?:^\1[ \t]*$|\Z)", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)((?:(?!\n[ \t]*\n).)+?)\1", re.DOTALL)  # not across paragraphs
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


def footer(response: Response, seconds: float | None) -> str:
    facts = [f"`{response.model}`"] if response.model else []
    usage = response.usage
    if usage.input_tokens or usage.output_tokens:
        facts.append(f"{usage.input_tokens:,} in · {usage.output_tokens:,} out tokens")
    if seconds is not None:
        facts.append(f"{seconds:.1f} s")
    if response.interrupted:
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
    """The Markdown of one turn's answer: each message's text, then its tool calls."""
    out = []
    results = {}
    messages = list(messages)
    for message in messages:
        for result in message.tool_results:
            results[result.tool_call_id] = result
    for message in messages:
        if message.role != "assistant":
            continue
        if message.text:
            out.append(sanitize(message.text) + ("\n\n" if message.tool_calls else ""))
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
