"""What a %%chat cell's text becomes: the notebook's values in place of `{name}`.

Only `{name}`, `{name.attr}`, `{In[n]}` and `{Out[n]}` naming something that exists are
replaced, and `{{name}}` is a literal `{name}`; every other brace is left as typed, so code,
dicts and JSON pasted into a prompt reach the model unchanged. A pandas DataFrame is sent as
its shape, dtypes and first rows (capped), not as its whole repr; a picture (a matplotlib
Figure, a PIL image) is sent as an image, `[image N]` standing for it in the text.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from .._images import image_part, is_image
from ..messages import ImagePart

_FIELD = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*|(?:In|Out)\[\d+\]"
_PLACE = re.compile(rf"\{{\{{(?P<escaped>{_FIELD})\}}\}}|\{{(?P<field>{_FIELD})\}}")
_MISSING = object()
#: A DataFrame in a prompt: this many first rows, columns listed, and characters of table.
HEAD_ROWS = 5
MAX_COLUMNS = 30
MAX_TABLE = 2_000


def fill(
    text: str, namespace: dict[str, Any], images: list[ImagePart] | None = None
) -> tuple[str, list[str]]:
    """`text` with the namespace's values in place, and notes on names left as typed that
    resemble defined ones (a mistyped `{nmae}`). Pictures are added to `images`, if given."""
    notes: list[str] = []

    def replaced(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "{" + match.group("escaped") + "}"
        field = match.group("field")
        value = _lookup(field, namespace)
        if value is not _MISSING:
            if images is not None and is_image(value):
                images.append(image_part(value, f"{{{field}}}"))
                return f"[image {len(images)}]"
            return _text(value)
        name = field.split(".")[0].split("[")[0]
        if name not in namespace:
            close = difflib.get_close_matches(name, _names(namespace), n=1, cutoff=0.75)
            if close:
                notes.append(
                    f"{{{field}}} is left as typed: no such name; did you mean {{{close[0]}}}?"
                )
        return match.group(0)

    return _PLACE.sub(replaced, text), notes


def _lookup(field: str, namespace: dict[str, Any]) -> Any:
    if field.endswith("]"):
        name, _, index = field[:-1].partition("[")
        cells = namespace.get(name, _MISSING)
        try:
            return cells[int(index)]  # In is a list, Out a dict: both by number
        except (TypeError, LookupError):
            return _MISSING
    name, *attrs = field.split(".")
    value = namespace.get(name, _MISSING)
    for attr in attrs:
        if value is _MISSING:
            break
        try:
            value = getattr(value, attr)
        except Exception:  # a property that raises is not a name to fill in
            return _MISSING
    return value


def _text(value: Any) -> str:
    """What the model is sent for a value: its str(), or a summary of a DataFrame."""
    kind = type(value)
    if kind.__name__ == "DataFrame" and kind.__module__.split(".")[0] == "pandas":
        return _frame(value)
    return str(value)


def _frame(frame: Any) -> str:
    rows, columns = frame.shape
    types = [f"{name} {dtype}" for name, dtype in list(frame.dtypes.items())[:MAX_COLUMNS]]
    if columns > MAX_COLUMNS:
        types.append(f"and {columns - MAX_COLUMNS:,} more")
    table = frame.head(HEAD_ROWS).to_string(max_cols=MAX_COLUMNS, max_colwidth=40)
    if len(table) > MAX_TABLE:
        table = table[:MAX_TABLE] + f"\n[table cut at {MAX_TABLE:,} characters]"
    shown = min(rows, HEAD_ROWS)
    return (
        f"pandas DataFrame, {rows:,} rows × {columns:,} columns\n"
        f"dtypes: {', '.join(types)}\n"
        f"first {shown} rows:\n{table}"
    )


def _names(namespace: dict[str, Any]) -> list[str]:
    return [name for name in namespace if not name.startswith("_")]
