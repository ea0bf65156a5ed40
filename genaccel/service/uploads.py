"""Init images sent to the API: a ``data:`` URL (base64) inside the request, never a path.

A request must not make the server read an arbitrary file, so ``init_image`` over HTTP is only
accepted as ``data:image/png;base64,...`` (PNG, JPEG or WebP); it is size-checked, decoded and
verified with Pillow, and written under ``home/uploads/OWNER/`` named by its hash.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from pathlib import Path

from genaccel.errors import InvalidRequest

FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}


def save_data_url(text: str, folder: Path, max_bytes: int) -> Path:
    """Decode, check and store an init image; returns its path on this server."""
    fix = "send init_image as a data URL: data:image/png;base64,... (PNG, JPEG or WebP)"
    head, sep, payload = text.partition(",")
    if not sep or not head.startswith("data:image/") or not head.endswith(";base64"):
        raise InvalidRequest("init_image", text, "must be a base64 data URL, not a path or URL", fix)
    if len(payload) * 3 // 4 > max_bytes:
        raise InvalidRequest("init_image", f"{len(payload) * 3 // 4} bytes", f"the limit is {max_bytes} bytes",
                             "send a smaller image")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("init_image", head, "is not valid base64", fix) from None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as img:
            kind = img.format or ""
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InvalidRequest("init_image", head, f"is not a readable image ({exc})", fix) from None
    if kind not in FORMATS:
        raise InvalidRequest("init_image", kind, "unsupported image format", fix)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(raw).hexdigest()[:32]}.{FORMATS[kind]}"
    if not path.exists():
        tmp = path.with_suffix(".part")
        tmp.write_bytes(raw)
        tmp.replace(path)
    return path
