"""A stand-in for api.github.com for the offline quickstart: answers GET /repos/OWNER/NAME
with made-up statistics, so examples/repo_info.py runs where there is no internet.

    python examples/local_github.py PORT
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class RepoStats(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "repos":
            self.send_error(404, "try /repos/OWNER/NAME")
            return
        body = json.dumps({"full_name": f"{parts[1]}/{parts[2]}", "stargazers_count": 17400,
                           "forks_count": 1650}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), RepoStats).serve_forever()
