"""A local stand-in for GitHub in tests: the repository-statistics API and git over HTTP.

``GET /repos/{owner}/{name}`` answers the JSON that examples/repo_info.py reads
(stargazers_count, forks_count), from the ``repos`` the test gives. ``/git/<repo>/...`` is
git's smart HTTP protocol, served by the real ``git http-backend`` (CGI) from ``git_root``;
with ``git_password`` set it needs HTTP Basic auth, like a private repository. Every
request's path and Authorization header are recorded for the test to inspect.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

GIT_HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"


@dataclass
class RepoServer:
    url: str
    repos: dict[str, dict[str, Any]]
    git_root: Path | None
    git_password: str | None
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, auth)


def _handler(server: RepoServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet tests
            pass

        def _reply(self, status: int, body: bytes, content_type: str = "application/json",
                   headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def _serve(self) -> None:
            server.requests.append((self.path, self.headers.get("Authorization")))
            if self.path.startswith("/git/"):
                self._git()
                return
            parts = self.path.strip("/").split("/")
            if self.command == "GET" and len(parts) == 3 and parts[0] == "repos":
                repo = server.repos.get(f"{parts[1]}/{parts[2]}")
                if repo is not None:
                    self._reply(200, json.dumps(repo).encode())
                    return
            self._reply(404, json.dumps({"message": "Not Found"}).encode())

        def _authorized(self) -> bool:
            if server.git_password is None:
                return True
            header = self.headers.get("Authorization") or ""
            if not header.startswith("Basic "):
                return False
            _, _, password = base64.b64decode(header[6:]).decode().partition(":")
            return password == server.git_password

        def _git(self) -> None:
            if not self._authorized():
                self._reply(401, b"authentication required", "text/plain",
                            {"WWW-Authenticate": 'Basic realm="git"'})
                return
            assert server.git_root is not None
            path, _, query = self.path[len("/git"):].partition("?")
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "GIT_PROJECT_ROOT": str(server.git_root), "GIT_HTTP_EXPORT_ALL": "1",
                "GATEWAY_INTERFACE": "CGI/1.1", "REQUEST_METHOD": self.command,
                "PATH_INFO": path, "QUERY_STRING": query, "REMOTE_ADDR": "127.0.0.1",
                "REMOTE_USER": "git", "CONTENT_TYPE": self.headers.get("Content-Type") or "",
                "CONTENT_LENGTH": str(length),
                "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding") or "",
                "HTTP_GIT_PROTOCOL": self.headers.get("Git-Protocol") or "",
            }
            done = subprocess.run([GIT_HTTP_BACKEND], input=body, env=env,
                                  capture_output=True, check=False)
            head, _, payload = done.stdout.partition(b"\r\n\r\n")
            status, headers = 200, {}
            for line in head.decode().split("\r\n"):
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.strip().split()[0])
                elif name and name.lower() not in ("content-length", "content-type"):
                    headers[name] = value.strip()
            content_type = next((line.partition(":")[2].strip()
                                 for line in head.decode().split("\r\n")
                                 if line.lower().startswith("content-type:")), "text/plain")
            self._reply(status, payload, content_type, headers)

    return Handler


@contextmanager
def serve_repos(repos: dict[str, dict[str, Any]] | None = None, *,
                git_root: Path | None = None,
                git_password: str | None = None) -> Iterator[RepoServer]:
    """Serve on 127.0.0.1 (a free port) until the block ends."""
    state = RepoServer("", repos or {}, git_root, git_password)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
