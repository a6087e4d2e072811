"""The audio file in a POST /v1/animate body: the body itself (curl --data-binary, fetch with a
Blob), or the file field of a multipart form (curl -F, an HTML form, FormData) — RFC 7578,
parsed here from the body already read under the upload limit, so that a form costs no
temporary file and no parser package."""

from __future__ import annotations

import re
from dataclasses import dataclass

# The name a file gets in messages when the request gives none.
UNNAMED = "the uploaded audio"
# Form field names taken for the audio when no part carries a file name.
AUDIO_FIELDS = ("file", "audio")
_MAX_PART_HEADER_BYTES = 8192


class UploadError(ValueError):
    """A body that holds no audio file to read: status and message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Upload:
    """data: the audio file's bytes; name: its file name when the form gave one (None: the
    body was the file)."""

    data: bytes
    name: str | None

    @property
    def source(self) -> str:
        """How messages and the JSON document name it."""
        return self.name or UNNAMED


def upload_of(body: bytes, content_type: str | None) -> Upload:
    """The audio file a request body carries (UploadError when a form holds none)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "multipart/form-data":
        return _form_file(body, content_type or "")
    if media.startswith("multipart/"):
        raise UploadError(
            415, f"{media} is not taken: send the audio file as the request body, or as a multipart/form-data file"
        )
    return Upload(bytes(body), None)


def _form_file(body: bytes, content_type: str) -> Upload:
    m = re.search(r'boundary="?([^";]+)"?', content_type, flags=re.I)
    if not m:
        raise UploadError(400, "multipart/form-data without a boundary in its Content-Type")
    delimiter = b"--" + m.group(1).encode("latin-1")
    parts = body.split(b"\r\n" + delimiter)
    # The first piece is the preamble up to the first delimiter (which may open the body).
    first = parts[0]
    if first.startswith(delimiter):
        parts[0] = first[len(delimiter) :]
    else:
        parts = parts[1:]
    named = None
    for part in parts:
        if part.startswith(b"--"):  # the closing delimiter
            break
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep or len(head) > _MAX_PART_HEADER_BYTES:
            raise UploadError(400, "a malformed multipart/form-data body (a part without its blank line)")
        field, filename = _disposition(_header_text(head))
        if filename is not None:
            return Upload(content, filename or None)
        if field in AUDIO_FIELDS and named is None:
            named = Upload(content, None)
    if named is not None:
        return named
    raise UploadError(400, "the form holds no file: send the audio as a file field (curl -F file=@take.wav URL)")


def _header_text(head: bytes) -> str:
    """A part's headers: browsers send a file name as raw UTF-8 (WHATWG multipart/form-data);
    anything else is read as Latin-1, which reads every byte."""
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError:
        return head.decode("latin-1")


def _disposition(head: str) -> tuple[str | None, str | None]:
    """(the field's name, its file name) from a part's Content-Disposition header."""
    for line in head.split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() != "content-disposition":
            continue
        params = {
            k.lower(): quoted or plain.strip()
            for k, quoted, plain in re.findall(r';\s*([\w*-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))', value)
        }
        filename = params.get("filename")
        if filename is not None:  # its last path segment (a browser's C:\path\name), printable, at most 255
            filename = filename.replace("\\", "/").rsplit("/", 1)[-1]
            filename = "".join(c for c in filename if c.isprintable()).strip()[:255]
        return params.get("name"), filename
    return None, None
