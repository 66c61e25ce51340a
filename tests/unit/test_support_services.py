"""The test suite's own readiness wait: only a 2xx counts as ready."""

from __future__ import annotations

import http.server
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.support.services import process, wait_http


@contextmanager
def _server(statuses: list[int]) -> Iterator[tuple[str, list[int]]]:
    """Answers each GET with the next status of `statuses` (the last one repeats)."""
    seen: list[int] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = statuses[min(len(seen), len(statuses) - 1)]
            seen.append(status)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/-/ready", seen
    finally:
        server.shutdown()
        server.server_close()


def test_wait_http_waits_past_503_until_200() -> None:
    """A server that says 503 while loading is not ready until it says 200."""
    with _server([503, 503, 503, 200]) as (url, seen):
        wait_http(url, deadline_s=10.0)
    assert seen == [503, 503, 503, 200]


def test_wait_http_gives_up_on_a_server_that_never_gets_ready() -> None:
    """A server stuck on 503 fails the wait with the last status in the message."""
    with _server([503]) as (url, _), pytest.raises(TimeoutError, match="HTTP 503"):
        wait_http(url, deadline_s=0.3)


def test_wait_http_refuses_an_answer_when_its_server_died() -> None:
    """Our server died (its port was taken); the 2xx on that port is someone else's: the
    wait fails naming the exit instead of handing the test the wrong server."""
    with (
        _server([200]) as (url, _),
        process([sys.executable, "-c", "raise SystemExit(3)"]) as dead,
    ):
        dead.wait(timeout=10)
        with pytest.raises(RuntimeError, match="exited with 3"):
            wait_http(url, deadline_s=5.0, proc=dead)
