"""Real local services for the tests and the benchmark, on 127.0.0.1 only, every wait bounded.

- :class:`AssetServer`: an HTTP server of product zips that honours ``Range`` and can be told to
  misbehave per file (cut the connection after some bytes, answer 500 or 429, ignore ``Range``);
  it counts the bytes it sends and keeps the request headers it saw.
- :class:`StacServer`: rustac's STAC API server (``rustac serve``, its in-memory backend) loaded with
  an ItemCollection file.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = ["AssetServer", "StacServer", "free_port", "rustac_command"]

START_TIMEOUT_S = 30.0


class AssetServer:
    """Serves ``root/NAME`` at ``/download/NAME``. ``faults[NAME]``: a list of actions consumed one per
    request: ``("cut", n)`` sends n bytes of the answer then closes, ``("status", code, headers)``
    answers that status, ``("full",)`` ignores Range and sends the whole file."""

    def __init__(self, root: Path) -> None:
        self.root, self.faults, self.sent, self.requests = Path(root), {}, {}, []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802 - the stdlib's name
                server._serve(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> AssetServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        name = h.path.rsplit("/", 1)[-1]
        with self._lock:
            self.requests.append({"name": name, "headers": dict(h.headers)})
            fault = self.faults.get(name, []).pop(0) if self.faults.get(name) else None
        path = self.root / name
        if not h.path.startswith("/download/") or not path.is_file():
            h.send_error(404)
            return
        if fault and fault[0] == "status":
            h.send_response(fault[1])
            for k, v in (fault[2] if len(fault) > 2 else {}).items():
                h.send_header(k, v)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        data = path.read_bytes()
        start = 0
        rng = h.headers.get("Range")
        if rng and not (fault and fault[0] == "full"):
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{len(data)}")
                h.end_headers()
                return
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            h.send_response(200)
        body = data[start:]
        h.send_header("Content-Type", "application/zip")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if fault and fault[0] == "cut":
            body = body[: fault[1]]
        h.wfile.write(body)
        with self._lock:
            self.sent[name] = self.sent.get(name, 0) + len(body)
        if fault and fault[0] == "cut":
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rustac_command() -> str:
    """rustac's command line (installed with the test extra, beside this Python)."""
    here = Path(sys.executable).parent / "rustac"
    found = str(here) if here.exists() else shutil.which("rustac")
    if not found:
        raise RuntimeError("rustac is not installed: bash scripts/install.sh test (its STAC API server)")
    return found


class StacServer:
    """``rustac serve`` on 127.0.0.1, loaded with ``items`` (a list of Item dicts) written to ``folder``."""

    def __init__(self, items: list[dict], folder: Path) -> None:
        self.file = Path(folder) / "items.json"
        self.file.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def __enter__(self) -> StacServer:
        log = open(self.file.with_suffix(".log"), "w")
        self.proc = subprocess.Popen([rustac_command(), "serve", "--create-collections", "--addr",
                                      f"127.0.0.1:{self.port}", str(self.file)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:  # bounded: the server answers within seconds or the test fails
            if self.proc.poll() is not None:
                raise RuntimeError(f"rustac serve exited: {self.file.with_suffix('.log').read_text()[-500:]}")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.__exit__()
        raise RuntimeError(f"rustac serve did not answer on {self.url} within {START_TIMEOUT_S} s")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
