"""The files of a generation request: read from uploads, URLs, data: URLs or bare base64, checked to be
the kind they should be (by their bytes first), and given their roles (first / last frame, reference).

The roles follow one rule in every dialect that has no field per role:
- one image is the first frame (i2v), two are the first and the last frame (i2v);
- references (or videos, or more than two images) make it ref2v, where every image is a reference;
- for images (t2i / i2i) every input image is a reference (an image to edit).
An explicit catalog (`catelogid`, `catalog`) decides instead of the files, and must agree with them.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from gateway.tasks.dialects.common import IMAGE_CATALOGS, VIDEO_CATALOGS, DialectError, Params, Upload
from providers.tasks.base import AUDIO, FIRST_FRAME, LAST_FRAME, REFERENCE, VIDEO, Media

# Per request, whatever the dialect; vendors take fewer (Vidu 7 references, Ark 4) and say so themselves.
MAX_IMAGES = 10
MAX_VIDEOS = 5
MAX_AUDIOS = 5

CATALOG_ALIASES = {"r2v": "ref2v", "reference2video": "ref2v", "img2video": "i2v", "text2video": "t2v"}


def sniff(data: bytes) -> str | None:
    """The media type the first bytes of a file say it is, for the kinds vendors take."""
    head = data[:16]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] in (b"WEBP", b"WAVE", b"AVI "):
        return {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}[head[8:12]]
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"mif1", b"avif"):
            return "image/avif" if brand == b"avif" else "image/heic"
        if brand in (b"M4A ", b"M4B "):
            return "audio/mp4"
        return "video/quicktime" if brand == b"qt  " else "video/mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "video/webm"
    if head[:3] == b"ID3" or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    if head[:4] == b"OggS":
        return "audio/ogg"
    if head[:4] == b"fLaC":
        return "audio/flac"
    return None


def _content_type(data: bytes, declared: str | None, filename: str | None) -> str | None:
    """What the bytes say; else the declared type, unless it says nothing (octet-stream); else the name."""
    found = sniff(data)
    if found:
        return found
    declared = (declared or "").split(";")[0].strip().lower()
    if declared and declared != "application/octet-stream":
        return declared
    return mimetypes.guess_type(filename)[0] if filename else None


def _check_kind(content_type: str | None, kind: str, where: str, param: str) -> str:
    article = "an" if kind[0] in "aeiou" else "a"
    if content_type is None:
        raise DialectError(
            f"{where} is not a file type the gateway can tell; send {article} {kind} file.", param, "invalid_file"
        )
    if not content_type.startswith(kind + "/"):
        raise DialectError(f"{where} must be {article} {kind}; it is {content_type}.", param, "invalid_file")
    return content_type


def from_upload(upload: Upload, role: str, kind: str) -> Media:
    where = f"The file {upload.filename or '(unnamed)'!r} in {upload.field!r}"
    if not upload.data:
        raise DialectError(f"{where} is empty.", upload.field, "invalid_file")
    content_type = _check_kind(
        _content_type(upload.data, upload.content_type, upload.filename), kind, where, upload.field
    )
    return Media(role=role, data=upload.data, content_type=content_type, filename=upload.filename)


def from_value(value: Any, role: str, kind: str, param: str) -> Media:
    """A file given in JSON: an http(s) URL, a data: URL, bare base64, or {"url"} / {"image_url"}."""
    if isinstance(value, Mapping):
        inner = value.get("url") or value.get("image_url") or value.get(f"{kind}_url")
        if isinstance(inner, Mapping):
            inner = inner.get("url")
        if value.get("file_id") and not inner:
            raise DialectError(
                "File ids are not served here (/v1/files answers 501); send the file, or its URL.", param
            )
        if not isinstance(inner, str):
            raise DialectError(f'The field {param!r} must hold a URL, like {{"url": "https://..."}}.', param)
        value = inner
    if not isinstance(value, str) or not value.strip():
        raise DialectError(f"The field {param!r} must be a URL, a data: URL or base64 text.", param)
    value = value.strip()
    if re.match(r"^https?://\S+$", value, re.IGNORECASE):
        guessed = mimetypes.guess_type(value.split("?")[0])[0]
        return Media(role=role, url=value, content_type=guessed or "application/octet-stream")
    if value[:5].lower() == "data:":
        header, sep, payload = value[5:].partition(",")
        if not sep or not payload:
            raise DialectError(f"The field {param!r} holds a data: URL with no data.", param)
        content_type = _check_kind(
            header.split(";")[0].strip().lower() or None, kind, f"The data: URL in {param!r}", param
        )
        return Media(role=role, url=value, content_type=content_type)
    if re.match(r"^[a-z][a-z0-9+.-]*:", value, re.IGNORECASE):  # base64 has no ":"
        raise DialectError(f"The field {param!r} must be an http(s) URL; got a {value.split(':')[0]}: URL.", param)
    try:
        data = base64.b64decode(re.sub(r"\s+", "", value), validate=True)
    except (binascii.Error, ValueError):
        raise DialectError(f"The field {param!r} must be an http(s) URL, a data: URL or base64 text.", param) from None
    where = f"The base64 data in {param!r}"
    if not data:
        raise DialectError(f"{where} is empty.", param, "invalid_file")
    return Media(role=role, data=data, content_type=_check_kind(sniff(data), kind, where, param))


def collect(params: Params, names: Sequence[str], role: str, kind: str = "image") -> list[Media]:
    """Every file under `names`: uploads of a form, and values (one, or a list) of JSON or form text."""
    found = [from_value(value, role, kind, name) for name, value in params.values_of(*names)]
    return found + [from_upload(upload, role, kind) for _, upload in params.files(*names)]


def catalog_of(params: Params, *names: str, allowed: Sequence[str]) -> str | None:
    """An explicit catalog field, aliases read (`r2v` is ref2v)."""
    found = params.text(*names)
    if found is None:
        return None
    catalog = CATALOG_ALIASES.get(found.lower(), found.lower())
    if catalog not in allowed:
        name = params.present(*names) or names[0]
        raise DialectError(f"Unknown {name} {found!r} here; use one of: {', '.join(allowed)}.", name)
    return catalog


def assign(
    kind: str,
    catalog: str | None,
    *,
    first: Sequence[Media] = (),
    last: Sequence[Media] = (),
    images: Sequence[Media] = (),
    references: Sequence[Media] = (),
    videos: Sequence[Media] = (),
    audios: Sequence[Media] = (),
    catalog_param: str = "catalog",
) -> tuple[str, tuple[Media, ...]]:
    """The catalog and the files with their roles, by the rule in the module docstring. `images` are
    the ones given without a role (a list, or a single field given several times)."""
    if len(first) > 1:
        images, first = [*first, *images], []
    if len(last) > 1:
        raise DialectError("Send one last frame.", "last_frame")
    all_images = [*first, *last, *images, *references]
    if kind == "image":
        catalog = catalog or ("i2i" if all_images else "t2i")
        if videos or audios:
            raise DialectError("Image generation takes only images.", "video" if videos else "audio")
        if catalog == "t2i" and all_images:
            raise DialectError("t2i takes no images; use i2i to edit or reference an image.", catalog_param)
        if catalog == "i2i" and not all_images:
            raise DialectError("i2i needs at least one image.", "image")
        media = [replace(m, role=REFERENCE) for m in all_images]
    elif catalog == "ref2v" or (catalog is None and (references or videos or len(images) > 2)):
        catalog = "ref2v"
        if not all_images and not videos:
            raise DialectError("ref2v needs at least one reference image or video.", "image_files")
        media = [*(replace(m, role=REFERENCE) for m in all_images), *videos, *audios]
    else:
        if references:
            raise DialectError(
                "Reference images make a ref2v task; set the catalog to ref2v, or send frames.", catalog_param
            )
        if videos:
            raise DialectError(
                f"{catalog or 'i2v'} takes no videos; reference videos make a ref2v task.", catalog_param
            )
        pool = list(images)
        frames = list(first) or pool[:1]
        pool = pool[len(frames) - len(first) :]
        ends = list(last) or pool[:1]
        pool = pool[len(ends) - len(last) :]
        if pool:
            raise DialectError("i2v takes two images at most: a first and a last frame.", "image")
        if ends and not frames:
            raise DialectError("A last frame needs a first frame too.", "last_frame")
        catalog = catalog or ("i2v" if frames else "t2v")
        if catalog == "t2v" and frames:
            raise DialectError("t2v takes no images; use i2v (frames) or ref2v (references).", catalog_param)
        if catalog == "i2v" and not frames:
            raise DialectError("i2v needs a first frame image.", "image")
        media = [*(replace(m, role=FIRST_FRAME) for m in frames), *(replace(m, role=LAST_FRAME) for m in ends), *audios]
    allowed = IMAGE_CATALOGS if kind == "image" else VIDEO_CATALOGS
    if catalog not in allowed:
        raise DialectError(f"Unknown catalog {catalog!r} here; use one of: {', '.join(allowed)}.", catalog_param)
    count(media)
    return catalog, tuple(media)


def count(media: Sequence[Media]) -> None:
    """Refuse more files than any vendor takes in one task."""
    limits = (
        ("images", MAX_IMAGES, lambda m: m.role not in (VIDEO, AUDIO)),
        ("videos", MAX_VIDEOS, lambda m: m.role == VIDEO),
        ("audio files", MAX_AUDIOS, lambda m: m.role == AUDIO),
    )
    for what, most, pick in limits:
        n = sum(1 for m in media if pick(m))
        if n > most:
            raise DialectError(f"Too many {what}: {n}; send at most {most}.", None, "too_many_files")
