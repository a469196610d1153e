"""What a %%chat cell's text becomes: the notebook's values in place of `{name}`.

Only `{name}`, `{name.attr}`, `{In[n]}` and `{Out[n]}` naming something that exists are
replaced (never a `_private` or `__dunder__` attribute, nor a `__dunder__` name: a shared
notebook's `{agent.provider.__dict__}` would send the API key, and save it in the notebook),
and `{{name}}` is a literal `{name}`; every other brace is left as typed, so code,
dicts and JSON pasted into a prompt reach the model unchanged. A pandas or polars DataFrame
or Series is sent as its shape, dtypes and first rows (capped), not as its whole repr; a polars
LazyFrame as its schema, never collected. A picture (a matplotlib Figure, a PIL image) is sent
as an image, `[image N]` standing for it in the text.
"""

from __future__ import annotations

import difflib
import itertools
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


class Unshowable(Exception):
    """A value named in the prompt that cannot be turned into text."""


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
        if _private(field):
            notes.append(
                f"{{{field}}} is left as typed: private attributes (_name) and __dunder__ "
                "names are never filled in"
            )
            return match.group(0)
        value = _lookup(field, namespace)
        if value is not _MISSING:
            if images is not None and is_image(value):
                images.append(image_part(value, f"{{{field}}}"))
                return f"[image {len(images)}]"
            try:
                return _text(value)
            except Exception as exc:  # a value's own __str__ or repr may raise
                raise Unshowable(
                    f"{{{field}}} cannot be put in the message: showing it raised "
                    f"{type(exc).__name__}: {exc}; nothing was sent (--raw sends the cell as typed)"
                ) from None
        name = field.split(".")[0].split("[")[0]
        if name not in namespace:
            close = difflib.get_close_matches(name, _names(namespace), n=1, cutoff=0.75)
            if close:
                notes.append(
                    f"{{{field}}} is left as typed: no such name; did you mean {{{close[0]}}}?"
                )
        return match.group(0)

    return _PLACE.sub(replaced, text), notes


def _private(field: str) -> bool:
    """Whether `field` names a `__dunder__` name or follows a `_private` attribute."""
    name, *attrs = field.split("[")[0].split(".")
    return name.startswith("__") or any(attr.startswith("_") for attr in attrs)


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
    """What the model is sent for a value: its str(), or a summary of a frame or series."""
    kind = _kind(value)
    if kind == ("pandas", "DataFrame"):
        return _frame("pandas", value, value.dtypes.items(), _pandas_table(value.head(HEAD_ROWS)))
    if kind == ("pandas", "Series"):
        return _series("pandas", value, value.head(HEAD_ROWS).to_frame())
    if kind == ("polars", "DataFrame"):
        return _frame("polars", value, value.schema.items(), _polars_table(value.head(HEAD_ROWS)))
    if kind == ("polars", "Series"):
        return _series("polars", value, value.head(HEAD_ROWS).to_frame())
    if kind == ("polars", "LazyFrame"):
        schema = value.collect_schema()  # the plan's schema: no data is read or computed
        return (
            f"polars LazyFrame, {_count(len(schema), 'column')} (lazy: not collected, so its rows "
            f"are not known)\ndtypes: {_dtypes(schema.items(), len(schema))}"
        )
    return str(value)


def _kind(value: Any) -> tuple[str, str] | None:
    """("pandas", "DataFrame") and the like for a value of (a subclass of) such a type,
    told without importing pandas or polars."""
    for cls in type(value).__mro__:
        package = cls.__module__.split(".")[0]
        if package in ("pandas", "polars") and cls.__name__ in ("DataFrame", "Series", "LazyFrame"):
            return package, cls.__name__
    return None


def _pandas_table(frame: Any) -> str:
    return frame.to_string(max_cols=MAX_COLUMNS, max_colwidth=40)


def _polars_table(frame: Any) -> str:
    import polars

    with polars.Config(
        tbl_cols=MAX_COLUMNS,
        tbl_rows=HEAD_ROWS,
        fmt_str_lengths=40,
        tbl_formatting="ASCII_MARKDOWN",
        tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True,  # listed above the table already
    ):
        return str(frame)


def _series(package: str, series: Any, head: Any) -> str:
    table = _pandas_table(head) if package == "pandas" else _polars_table(head)
    return (
        f"{package} Series {_named(series.name)}, {_count(len(series), 'row')}, "
        f"dtype {series.dtype}\n"
        f"first {_count(min(len(series), HEAD_ROWS), 'value')}:\n{_capped(table)}"
    )


def _frame(package: str, frame: Any, dtypes: Any, table: str) -> str:
    rows, columns = frame.shape
    return (
        f"{package} DataFrame, {_count(rows, 'row')} × {_count(columns, 'column')}\n"
        f"dtypes: {_dtypes(dtypes, columns)}\n"
        f"first {_count(min(rows, HEAD_ROWS), 'row')}:\n{_capped(table)}"
    )


def _dtypes(dtypes: Any, columns: int) -> str:
    types = [f"{name} {dtype}" for name, dtype in itertools.islice(dtypes, MAX_COLUMNS)]
    if columns > MAX_COLUMNS:
        types.append(f"and {columns - MAX_COLUMNS:,} more")
    return ", ".join(types)


def _capped(table: str) -> str:
    if len(table) > MAX_TABLE:
        return table[:MAX_TABLE] + f"\n[table cut at {MAX_TABLE:,} characters]"
    return table


def _count(number: int, thing: str) -> str:
    return f"{number:,} {thing}{'s' if number != 1 else ''}"


def _named(name: Any) -> str:
    return "(no name)" if name is None or name == "" else repr(str(name))


def _names(namespace: dict[str, Any]) -> list[str]:
    return [name for name in namespace if not name.startswith("_")]
