"""Where an Anthropic request carries cache breakpoints, and the request without them."""

from __future__ import annotations

import json


def marks(wire: dict) -> list[str]:
    """Where the breakpoints are, as paths."""
    found = []

    def walk(value, path):
        if isinstance(value, dict):
            if "cache_control" in value:
                assert value["cache_control"] == {"type": "ephemeral"}
                found.append(path)
            for key, item in value.items():
                walk(item, f"{path}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]")

    walk(wire, "")
    return found


def unmarked(wire):
    """`wire` without its cache marks, a lone text block as the plain string it was."""
    text = json.loads(json.dumps(wire).replace(', "cache_control": {"type": "ephemeral"}', ""))
    if isinstance(text.get("system"), list):
        text["system"] = text["system"][0]["text"]
    for message in text["messages"]:
        content = message["content"]
        if isinstance(content, list) and len(content) == 1 and content[0]["type"] == "text":
            message["content"] = content[0]["text"]
    return text
