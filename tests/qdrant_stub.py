"""A stand-in for a Qdrant server's REST API, as far as the item index uses it: it records
what the client sends, and answers point reads after a delay (a slow or distant server).

No Qdrant server is installable here, and qdrant-client's local mode is not a network
client: this is what a test of the client's requests, or of waiting on the network, needs.
"""

from __future__ import annotations

import importlib.metadata
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    body: Any


class QdrantStub:
    """Collections exist once created; a query answers `points` (scored points as Qdrant's
    JSON has them), a retrieve `records`, each after `delay_s`."""

    def __init__(
        self,
        *,
        delay_s: float = 0.0,
        points: list[dict[str, Any]] | None = None,
        records: list[dict[str, Any]] | None = None,
    ) -> None:
        self.delay_s = delay_s
        self.points = points or []
        self.records = records or []
        self.collections: set[str] = set()
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def sent(self, method: str, suffix: str) -> list[Request]:
        """The requests of this method whose path ends so."""
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path.endswith(suffix)]

    def _answer(self, method: str, path: str) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if len(parts) < 2 or parts[0] != "collections":
            return 404, None
        name, rest = parts[1], parts[2:]
        if method == "GET" and rest == ["exists"]:
            return 200, {"exists": name in self.collections}
        if method == "PUT" and not rest:
            self.collections.add(name)
            return 200, True
        if method == "PUT" and rest == ["index"]:
            return 200, {"operation_id": 0, "status": "completed"}
        if method == "POST" and rest == ["points", "scroll"]:
            return 200, {"points": [], "next_page_offset": None}
        if method == "POST" and rest == ["points", "query"]:
            time.sleep(self.delay_s)
            return 200, {"points": self.points}
        if method == "POST" and rest == ["points"]:
            time.sleep(self.delay_s)
            return 200, self.records
        return 404, None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                url = urlsplit(self.path)
                size = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(size) if size else b""
                with stub._lock:
                    stub.requests.append(
                        Request(self.command, url.path, url.query, json.loads(raw) if raw else None)
                    )
                status, result = stub._answer(self.command, url.path)
                if self.command == "GET" and url.path == "/":  # the client's version check
                    status = 200
                    body = {
                        "title": "qdrant",
                        "version": importlib.metadata.version("qdrant-client"),
                    }
                elif status == 200:
                    body = {"result": result, "status": "ok", "time": 0.0}
                else:
                    body = {"status": {"error": f"not found: {url.path}"}, "time": 0.0}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = _serve  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test reads `requests`."""

        return Handler
