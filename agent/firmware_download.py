"""Fetching a firmware image over HTTP(S) into the agent's state directory, resuming a cut one.

``download_image`` writes ``<directory>/<version>.part`` and renames it ``<version>.img``
once it holds the manifest's size. A partial file is continued with ``Range: bytes=N-``
(206); a server that ignores the range (200) is read from the start again; 416 means
there is nothing left to send. Never more than the manifest's size is written, a read
that stalls times out, and progress goes to a callback at most once per percent.

http.client rather than urllib.request: urllib follows redirects with the
``Authorization`` header still on, to any host, which would hand the terminal's secret
to whoever a redirect names. Here nothing is followed. Whether the bytes are the right
ones is for the caller to check (size, SHA-256, signature): this module only fetches.
"""

from __future__ import annotations

import base64
import http.client
import logging
import os
import re
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from agent.errors import AgentError

log = logging.getLogger(__name__)

READ_BYTES = 64 * 1024
USER_AGENT = "tms-agent"
_CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)")

# (bytes written so far, the image's size); called at most once per percent.
DownloadProgress = Callable[[int, int], None]


class DownloadFailed(AgentError):
    """No image: ``reason`` is one word for counting, the message says what to do."""

    def __init__(self, reason: str, message: str, *, retry: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        # A cut connection, a stall or a 5xx may pass; a refusal (401, 404) will not.
        self.retry = retry


@dataclass(frozen=True, slots=True)
class Credentials:
    """HTTP Basic login: the terminal's serial and its MQTT secret."""

    username: str
    password: str = field(repr=False)

    def header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True, slots=True)
class DownloadSource:
    """One place to fetch from; a mirror gets no credentials (the signature, not the
    server, makes its bytes trusted)."""

    url: str
    credentials: Credentials | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DownloadFailed("url", f"{self.url!r} is not an http:// or https:// URL")


@dataclass(frozen=True, slots=True)
class DownloadOptions:
    # A read (or the connect) that waits this long for a byte ends the attempt.
    read_timeout_s: float = 30.0
    # Attempts per source for a cut connection, a stall or a 5xx; each resumes.
    attempts: int = 3
    retry_delay_s: float = 2.0
    # For https: None is the system's trust store.
    ssl_context: ssl.SSLContext | None = None


def image_paths(directory: Path, version: str) -> tuple[Path, Path]:
    """(the partial file, the complete one) of ``version``; the version is a file name
    already (shared.firmware_signature.VERSION: letters, digits and . + _ -)."""
    return directory / f"{version}.part", directory / f"{version}.img"


def download_image(
    sources: Sequence[DownloadSource],
    directory: Path,
    version: str,
    size: int,
    *,
    options: DownloadOptions | None = None,
    progress: DownloadProgress | None = None,
    cancelled: threading.Event | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """The complete image's path, fetched from the first source that gives it.

    Blocks (run it in a thread); setting ``cancelled`` ends it after the current read,
    keeping the partial file. Raises DownloadFailed with the last source's reason.
    """
    options = options or DownloadOptions()
    part, complete = image_paths(directory, version)
    if complete.exists() and complete.stat().st_size == size:
        return complete  # fetched by an earlier command; the caller verifies it again
    directory.mkdir(parents=True, exist_ok=True)
    meter = _Meter(size, progress, cancelled or threading.Event())
    failure: DownloadFailed | None = None
    for source in sources:
        for attempt in range(1, options.attempts + 1):
            try:
                _fetch(source, part, size, options, meter)
            except DownloadFailed as exc:
                if exc.reason == "cancelled":
                    raise
                failure = exc
                log.warning(
                    "firmware %s from %s, attempt %d: %s", version, source.url, attempt, exc
                )
                if not exc.retry:
                    break
                if attempt < options.attempts:
                    sleep(options.retry_delay_s)
                continue
            os.replace(part, complete)
            return complete
    assert failure is not None, "no source to download from"
    raise failure


class _Meter:
    """Calls the progress callback when the whole percent changes, not per read, and
    stops the download when it is cancelled (the agent is stopping)."""

    def __init__(
        self, size: int, progress: DownloadProgress | None, cancelled: threading.Event
    ) -> None:
        self.size = size
        self._progress = progress
        self._cancelled = cancelled
        self._last_percent = -1

    def update(self, done: int) -> None:
        if self._cancelled.is_set():
            raise DownloadFailed("cancelled", f"download cancelled at byte {done}")
        percent = done * 100 // self.size
        if self._progress is not None and percent != self._last_percent:
            self._last_percent = percent
            self._progress(done, self.size)


def _connection(source: DownloadSource, options: DownloadOptions) -> http.client.HTTPConnection:
    parts = urlsplit(source.url)
    if parts.scheme == "https":
        context = options.ssl_context or ssl.create_default_context()
        return http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=options.read_timeout_s, context=context
        )
    return http.client.HTTPConnection(
        parts.hostname or "", parts.port, timeout=options.read_timeout_s
    )


def _target(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _fetch(
    source: DownloadSource, part: Path, size: int, options: DownloadOptions, meter: _Meter
) -> None:
    """One request; on return ``part`` holds ``size`` bytes."""
    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()  # longer than the image can be: not ours to continue
        have = 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    if source.credentials is not None:
        headers["Authorization"] = source.credentials.header()
    connection = _connection(source, options)
    try:
        connection.request("GET", _target(source.url), headers=headers)
        response = connection.getresponse()
        start = _start_of(response, source.url, have, size, part)
        if start is None:
            return  # 416: the file was complete already
        with part.open("r+b" if part.exists() else "wb") as out:
            out.seek(start)
            out.truncate()
            _copy_body(response, out, start, size, meter, source.url)
            out.flush()
            os.fsync(out.fileno())
    except TimeoutError as exc:
        raise DownloadFailed(
            "stalled",
            f"{source.url}: no data for {options.read_timeout_s:g} s",
            retry=True,
        ) from exc
    except ssl.SSLError as exc:  # before OSError: it is one, and retrying will not help
        raise DownloadFailed("tls", f"{source.url}: TLS failed: {exc}") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadFailed(
            "connection", f"{source.url}: {exc.__class__.__name__}: {exc}", retry=True
        ) from exc
    finally:
        connection.close()


def _start_of(
    response: http.client.HTTPResponse, url: str, have: int, size: int, part: Path
) -> int | None:
    """Where the body's first byte goes in the file, or None when nothing is missing."""
    status = response.status
    if status == 206:
        found = _CONTENT_RANGE.fullmatch(response.getheader("Content-Range") or "")
        if found is None or found.group(1) is None or int(found.group(1)) != have:
            # Not the range asked for: start over rather than splice wrong bytes in.
            part.unlink(missing_ok=True)
            raise DownloadFailed("range", f"{url}: 206 for another range than {have}-", retry=True)
        _check_total(found.group(3), url, size)
        return have
    if status == 200:
        if have:
            log.info("%s ignored the range request: downloading from the start again", url)
        length = response.getheader("Content-Length")
        if length is not None and length.isdigit() and int(length) != size:
            raise DownloadFailed(
                "size", f"{url} serves {length} bytes, the signed manifest says {size}"
            )
        return 0
    if status == 416:
        # Nothing from byte `have` on: complete when `have` is the whole image. Else the
        # server's image is shorter than the manifest's, or the partial file is not its.
        if have == size:
            return None
        part.unlink(missing_ok=True)
        raise DownloadFailed(
            "size", f"{url}: nothing from byte {have} (416): the image is not {size} bytes"
        )
    if status in (401, 403):
        raise DownloadFailed(
            "unauthorized",
            f"{url} refused the terminal's login (HTTP {status}): check [agent] serial and "
            "the MQTT secret, and that the terminal is not revoked",
        )
    if status == 404:
        raise DownloadFailed("not_found", f"{url}: no such image (HTTP 404)")
    if 300 <= status < 400:
        raise DownloadFailed(
            "redirect",
            f"{url} redirects to {response.getheader('Location')!r} (HTTP {status}): "
            "redirects are not followed (the login would go along); give that URL as "
            "mirror_url instead",
        )
    raise DownloadFailed("http", f"{url}: HTTP {status} {response.reason}", retry=status >= 500)


def _check_total(total: str, url: str, size: int) -> None:
    if total != "*" and int(total) != size:
        raise DownloadFailed("size", f"{url} serves {total} bytes, the signed manifest says {size}")


def _copy_body(
    response: http.client.HTTPResponse,
    out: BinaryIO,
    start: int,
    size: int,
    meter: _Meter,
    url: str,
) -> None:
    done = start
    meter.update(done)
    while done < size:
        # read1: what has arrived, so a stall or a cut loses nothing already received.
        chunk = response.read1(min(READ_BYTES, size - done))
        if not chunk:
            out.flush()
            raise DownloadFailed(
                "cut", f"{url}: the connection ended at byte {done} of {size}", retry=True
            )
        out.write(chunk)
        done += len(chunk)
        meter.update(done)
