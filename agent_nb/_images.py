"""Images given to a turn (`session.run(prompt, images=[...])`) made into ImageParts."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import ImageError
from .messages import MAX_IMAGE_BYTES, ImagePart, _short, check_image_size

#: What `images=` takes, for errors.
TAKES = (
    "a path to a PNG, JPEG, GIF or WebP file, its bytes, an ImagePart, a matplotlib Figure, "
    "or an object with _repr_png_ (a PIL image, IPython.display.Image)"
)


def image_parts(images: Any) -> tuple[ImagePart, ...]:
    """`images=` as ImageParts; ImageError naming the item that is not an image."""
    if images is None:
        return ()
    if isinstance(images, str | bytes | os.PathLike) or not isinstance(images, Iterable):
        images = [images]  # one image given alone
    return tuple(image_part(item, f"image {number}") for number, item in enumerate(images, 1))


def image_part(value: Any, what: str) -> ImagePart:
    """One image as an ImagePart; `what` names it in errors ("image 2", "{fig}")."""
    if isinstance(value, ImagePart):
        return value
    if isinstance(value, str | os.PathLike):
        return _from_file(Path(value), what)
    if isinstance(value, bytes | bytearray | memoryview):
        return _checked(bytes(value), what)
    try:
        raw = rendered(value)
    except Exception as exc:  # a picture's own _repr_png_ or savefig may raise
        raise ImageError(f"{what}: making it an image raised {type(exc).__name__}: {exc}") from None
    if raw is None:
        raise ImageError(f"{what} is {_short(value)}, not an image; images= takes {TAKES}")
    return _checked(raw, what)


def is_image(value: Any) -> bool:
    """Whether `value` is a picture object (a Figure, a PIL image, an object that renders
    as PNG or JPEG), not text; math that also renders as LaTeX (sympy) counts as text."""
    kind = type(value)
    if _is_figure(value):
        return True
    if hasattr(kind, "_repr_latex_") or isinstance(value, type):
        return False
    return callable(getattr(kind, "_repr_png_", None)) or callable(
        getattr(kind, "_repr_jpeg_", None)
    )


def rendered(value: Any) -> bytes | None:
    """A picture object's PNG (or JPEG) bytes; None for anything else."""
    if _is_figure(value):
        buffer = io.BytesIO()
        value.savefig(buffer, format="png", bbox_inches="tight")
        return buffer.getvalue()
    if not is_image(value):
        return None
    for method in ("_repr_png_", "_repr_jpeg_"):
        render = getattr(value, method, None)
        if callable(render):
            raw = render()
            if isinstance(raw, tuple):  # (data, metadata), as IPython allows
                raw = raw[0]
            if isinstance(raw, bytes):
                return raw
    return None


def _is_figure(value: Any) -> bool:
    kind = type(value)
    return kind.__module__.startswith("matplotlib.") and callable(getattr(value, "savefig", None))


def _from_file(path: Path, what: str) -> ImagePart:
    named = f"{what} ({str(path)!r})"
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_IMAGE_BYTES + 1)  # no more than the cap is ever read
        if len(raw) > MAX_IMAGE_BYTES:
            check_image_size(max(path.stat().st_size, len(raw)))
    except FileNotFoundError:
        raise ImageError(f"{what}: no file {str(path)!r}; check the path") from None
    except IsADirectoryError:
        raise ImageError(f"{what}: {str(path)!r} is a folder, not an image file") from None
    except OSError as exc:
        raise ImageError(f"{named} cannot be read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ImageError(f"{named}: {exc}") from None
    return _checked(raw, named)


def _checked(raw: bytes, what: str) -> ImagePart:
    try:
        return ImagePart.from_bytes(raw)
    except ValueError as exc:
        raise ImageError(f"{what}: {exc}") from None


def dimensions(image: ImagePart) -> tuple[int, int] | None:
    """(width, height) in pixels, from the image's header (None: not found in it); for the
    tokens an image costs, so only the first kilobytes are decoded (a JPEG's may be later)."""
    import base64
    import struct

    head = base64.b64decode(image.data[:87_384])  # 64 kB
    try:
        if image.media_type == "image/png":
            return struct.unpack(">II", head[16:24])
        if image.media_type == "image/gif":
            return struct.unpack("<HH", head[6:10])
        if image.media_type == "image/webp":
            return _webp_size(head)
        return _jpeg_size(head)
    except struct.error:
        return None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    import struct

    chunk = head[12:16]
    if chunk == b"VP8X":
        width = int.from_bytes(head[24:27], "little") + 1
        return width, int.from_bytes(head[27:30], "little") + 1
    if chunk == b"VP8L":
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    """From the first start-of-frame marker (SOF0..SOF15 but DHT, JPG and DAC)."""
    import struct

    at = 2
    while at + 9 <= len(head):
        if head[at] != 0xFF:
            return None
        marker = head[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", head[at + 5 : at + 9])
            return width, height
        (length,) = struct.unpack(">H", head[at + 2 : at + 4])
        at += 2 + length
    return None
