"""The agent's firmware download over real HTTP: an in-process server on 127.0.0.1 (a free
port) that serves an image the way a console, a mirror or a bad server would. No
database, no broker."""

from __future__ import annotations

import base64
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.firmware_download import (
    Credentials,
    DownloadFailed,
    DownloadOptions,
    DownloadSource,
    download_image,
    image_paths,
)

pytestmark = pytest.mark.integration

VERSION = "3.1.0"
IMAGE = b"TC200FW:3.1.0\n" + bytes(range(256)) * 1200  # ~300 KB: several reads
PATH = f"/api/v1/firmware/{VERSION}/image"
LOGIN = Credentials("TC200-DL1", "s3cret")
FAST = DownloadOptions(read_timeout_s=2.0, attempts=1, retry_delay_s=0.0)


@dataclass
class Behaviour:
    """How the server answers; ``requests`` records (path, Range, Authorization)."""

    image: bytes = IMAGE
    login: Credentials | None = LOGIN
    ranges: bool = True  # False: ignores Range and always sends 200
    cut_at: int | None = None  # the first body stops after this many bytes
    stall_s: float = 0.0  # the first body pauses this long halfway
    no_length: bool = False  # no Content-Length: the body ends when the connection does
    requests: list[tuple[str, str | None, str | None]] = field(default_factory=list)


class ImageHandler(http.server.BaseHTTPRequestHandler):
    behaviour: Behaviour

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        b = self.behaviour
        wanted, auth = self.headers.get("Range"), self.headers.get("Authorization")
        b.requests.append((self.path, wanted, auth))
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", f"http://elsewhere.test{PATH}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path != PATH:
            self.send_error(404)
            return
        if b.login is not None and auth != LOGIN_HEADER:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="tms"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        if b.ranges and wanted is not None:
            start = int(wanted.removeprefix("bytes=").removesuffix("-"))
            if start >= len(b.image):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(b.image)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(b.image) - 1}/{len(b.image)}")
        else:
            self.send_response(200)
        body = b.image[start:]
        if not b.no_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        first = len(b.requests) == 1
        if first and b.cut_at is not None:
            self.wfile.write(body[: b.cut_at])
            self.close_connection = True
            return
        if first and b.stall_s:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            time.sleep(b.stall_s)
            return
        self.wfile.write(body)
        if b.no_length:
            self.close_connection = True


LOGIN_HEADER = LOGIN.header()


@dataclass
class Server:
    behaviour: Behaviour
    port: int

    def url(self, path: str = PATH) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def serve() -> Iterator[Server]:
    behaviour = Behaviour()
    handler = type("Handler", (ImageHandler,), {"behaviour": behaviour})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Server(behaviour, httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


def fetch(
    server: Server,
    directory: Path,
    options: DownloadOptions = FAST,
    progress: list[tuple[int, int]] | None = None,
    login: Credentials | None = LOGIN,
) -> Path:
    return download_image(
        [DownloadSource(server.url(), login)],
        directory,
        VERSION,
        len(IMAGE),
        options=options,
        progress=None if progress is None else lambda done, size: progress.append((done, size)),
    )


def test_a_full_download_lands_as_the_image(serve: Server, tmp_path: Path) -> None:
    progress: list[tuple[int, int]] = []
    path = fetch(serve, tmp_path, progress=progress)
    assert path == tmp_path / f"{VERSION}.img" and path.read_bytes() == IMAGE
    assert not image_paths(tmp_path, VERSION)[0].exists()
    assert serve.behaviour.requests == [(PATH, None, LOGIN_HEADER)]
    # At most once per percent, in order, ending at the whole image.
    assert 2 <= len(progress) <= 101 and progress[-1] == (len(IMAGE), len(IMAGE))
    percents = [done * 100 // size for done, size in progress]
    assert percents == sorted(set(percents))


def test_a_download_cut_in_half_resumes_with_a_range(serve: Server, tmp_path: Path) -> None:
    half = len(IMAGE) // 2
    serve.behaviour.cut_at = half
    with pytest.raises(DownloadFailed) as cut:
        fetch(serve, tmp_path)
    assert cut.value.reason == "cut" and f"ended at byte {half}" in str(cut.value)
    part = image_paths(tmp_path, VERSION)[0]
    assert part.read_bytes() == IMAGE[:half]
    path = fetch(serve, tmp_path)  # the next command
    assert path.read_bytes() == IMAGE
    assert [r[1] for r in serve.behaviour.requests] == [None, f"bytes={half}-"]


def test_a_cut_is_resumed_within_one_download(serve: Server, tmp_path: Path) -> None:
    serve.behaviour.cut_at = 1000
    options = DownloadOptions(read_timeout_s=2.0, attempts=3, retry_delay_s=0.0)
    assert fetch(serve, tmp_path, options).read_bytes() == IMAGE
    assert [r[1] for r in serve.behaviour.requests] == [None, "bytes=1000-"]


def test_a_server_that_ignores_the_range_is_read_from_the_start(
    serve: Server, tmp_path: Path
) -> None:
    serve.behaviour.ranges = False
    part = image_paths(tmp_path, VERSION)[0]
    part.write_bytes(b"\xff" * 5000)  # not the image's first bytes: they must not stay
    assert fetch(serve, tmp_path).read_bytes() == IMAGE
    assert serve.behaviour.requests[0][1] == "bytes=5000-"


def test_a_complete_partial_file_is_answered_416_and_kept(serve: Server, tmp_path: Path) -> None:
    image_paths(tmp_path, VERSION)[0].write_bytes(IMAGE)
    assert fetch(serve, tmp_path).read_bytes() == IMAGE
    assert serve.behaviour.requests[0][1] == f"bytes={len(IMAGE)}-"


def test_a_downloaded_image_is_not_fetched_again(serve: Server, tmp_path: Path) -> None:
    fetch(serve, tmp_path)
    fetch(serve, tmp_path)
    assert len(serve.behaviour.requests) == 1


def test_wrong_credentials_are_a_clear_error_not_retried(serve: Server, tmp_path: Path) -> None:
    options = DownloadOptions(read_timeout_s=2.0, attempts=3, retry_delay_s=0.0)
    with pytest.raises(DownloadFailed) as refused:
        fetch(serve, tmp_path, options, login=Credentials("TC200-DL1", "wrong"))
    assert refused.value.reason == "unauthorized"
    assert "refused the terminal's login (HTTP 401)" in str(refused.value)
    assert len(serve.behaviour.requests) == 1
    assert not (tmp_path / f"{VERSION}.img").exists()


def test_a_stalled_read_times_out(serve: Server, tmp_path: Path) -> None:
    serve.behaviour.stall_s = 2.0
    options = DownloadOptions(read_timeout_s=0.3, attempts=1)
    started = time.monotonic()
    with pytest.raises(DownloadFailed) as stalled:
        fetch(serve, tmp_path, options)
    assert stalled.value.reason == "stalled" and time.monotonic() - started < 1.5
    assert image_paths(tmp_path, VERSION)[0].stat().st_size == len(IMAGE) // 2


def test_never_more_than_the_manifest_size_is_written(serve: Server, tmp_path: Path) -> None:
    serve.behaviour.image = IMAGE + b"\x00" * 50_000
    serve.behaviour.no_length = True  # nothing says how long it is
    path = fetch(serve, tmp_path)
    assert path.read_bytes() == IMAGE  # cut at the manifest's size; the SHA-256 decides


def test_a_length_other_than_the_manifest_is_refused_at_once(serve: Server, tmp_path: Path) -> None:
    serve.behaviour.image = IMAGE + b"\x00"
    with pytest.raises(DownloadFailed) as wrong:
        fetch(serve, tmp_path)
    assert wrong.value.reason == "size" and "the signed manifest says" in str(wrong.value)


def test_the_mirror_is_asked_first_without_credentials(serve: Server, tmp_path: Path) -> None:
    serve.behaviour.login = None  # a mirror that would serve anyone
    mirror, console = serve.url(), serve.url(PATH)
    path = download_image(
        [DownloadSource(mirror), DownloadSource(console, LOGIN)],
        tmp_path,
        VERSION,
        len(IMAGE),
        options=FAST,
    )
    assert path.read_bytes() == IMAGE
    assert serve.behaviour.requests == [(PATH, None, None)]


def test_a_missing_mirror_falls_back_to_the_console(serve: Server, tmp_path: Path) -> None:
    path = download_image(
        [DownloadSource(serve.url("/mirror/nothing")), DownloadSource(serve.url(), LOGIN)],
        tmp_path,
        VERSION,
        len(IMAGE),
        options=FAST,
    )
    assert path.read_bytes() == IMAGE
    assert [(r[0], r[2]) for r in serve.behaviour.requests] == [
        ("/mirror/nothing", None),
        (PATH, LOGIN_HEADER),
    ]


def test_a_cancelled_download_stops_and_keeps_its_part(serve: Server, tmp_path: Path) -> None:
    cancelled = threading.Event()

    def cancel_at_half(done: int, size: int) -> None:
        if done >= size // 2:
            cancelled.set()  # what the agent does when it is told to stop

    with pytest.raises(DownloadFailed) as stopped:
        download_image(
            [DownloadSource(serve.url(), LOGIN)],
            tmp_path,
            VERSION,
            len(IMAGE),
            options=FAST,
            progress=cancel_at_half,
            cancelled=cancelled,
        )
    assert stopped.value.reason == "cancelled"
    kept = image_paths(tmp_path, VERSION)[0].read_bytes()
    assert len(IMAGE) // 2 <= len(kept) < len(IMAGE) and IMAGE.startswith(kept)


def test_a_redirect_is_not_followed_with_the_login(serve: Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadFailed) as moved:
        download_image([DownloadSource(serve.url("/moved"), LOGIN)], tmp_path, VERSION, len(IMAGE))
    assert moved.value.reason == "redirect" and "elsewhere.test" in str(moved.value)
    assert len(serve.behaviour.requests) == 1


def test_nothing_listening_is_a_connection_error(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DownloadFailed) as down:
        download_image(
            [DownloadSource(f"http://127.0.0.1:{port}/x", LOGIN)],
            tmp_path,
            VERSION,
            len(IMAGE),
            options=FAST,
        )
    assert down.value.reason == "connection" and down.value.retry


def test_login_header_is_basic(tmp_path: Path) -> None:
    scheme, _, encoded = LOGIN_HEADER.partition(" ")
    assert (scheme, base64.b64decode(encoded)) == ("Basic", b"TC200-DL1:s3cret")
    assert "s3cret" not in repr(LOGIN)
