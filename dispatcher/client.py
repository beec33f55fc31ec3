"""The CLI's HTTP client for the pushpool API: the only way the CLI reaches the dispatcher.

The CLI never opens the database. Every command goes through ``ApiClient``, which adds the
bearer token when ``PUSHPOOL_API_TOKEN`` is set and turns the API's ``{"error", "message",
"details"}`` answers into ``ApiError``. httpx is imported on the first request, not at import,
so ``pushpool --help`` stays fast.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

# Mirrors dispatcher.settings.Settings.api_url; read from the environment directly because
# importing pydantic-settings would cost the CLI a third of its start-up budget.
DEFAULT_API_URL = "http://127.0.0.1:4300"
REQUEST_TIMEOUT_SECONDS = 30.0
# Statuses that mean "what you asked for is wrong": the CLI exits 2 for these, 1 otherwise.
INPUT_ERROR_STATUSES = frozenset({400, 404, 409, 413, 422})


class ApiError(Exception):
    """The API answered with an error status."""

    def __init__(self, status: int, code: str, message: str, path: str,
                 details: list[Any] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.path = path
        self.details = details or []

    @property
    def exit_code(self) -> int:
        return 2 if self.status in INPUT_ERROR_STATUSES else 1


class ApiUnreachable(Exception):
    """Nothing answered at the API URL (connection refused, DNS failure, connect timeout)."""

    def __init__(self, url: str, reason: str = ""):
        super().__init__(url)
        self.url = url
        self.reason = reason


class ApiTransportError(Exception):
    """The API was reached but the exchange broke (read timeout, dropped connection)."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


def segment(value: str) -> str:
    """One URL path segment; ':' stays readable because pool types use it (``ecs:push``)."""
    from urllib.parse import quote

    return quote(value, safe=":@")


def api_url_from_env() -> str:
    url = os.environ.get("PUSHPOOL_API_URL") or DEFAULT_API_URL
    url = url.rstrip("/")
    # Accept a URL that already ends in /api: every path below starts with /api.
    return url[: -len("/api")] if url.endswith("/api") else url


@dataclass
class ApiClient:
    base_url: str
    token: str | None = None
    timeout: float = REQUEST_TIMEOUT_SECONDS
    _http: httpx.Client | None = field(default=None, repr=False)

    def _client(self) -> httpx.Client:
        if self._http is None:
            import httpx

            headers = {"Accept": "application/json", "User-Agent": "pushpool-cli"}
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            self._http = httpx.Client(base_url=self.base_url, headers=headers,
                                      timeout=self.timeout)
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, json: Any = None,
                params: dict[str, Any] | None = None,
                headers: dict[str, str] | None = None) -> Any:
        """Send one request to ``/api{path}``; answer the decoded JSON body (None when empty)."""
        return self.send(method, path, json=json, params=params, headers=headers)[1]

    def send(self, method: str, path: str, *, json: Any = None,
             params: dict[str, Any] | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """Like ``request`` but also answer the status (201 created vs 200 found again)."""
        import httpx

        clean_params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._client().request(method, "/api" + path, json=json,
                                              params=clean_params, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ApiUnreachable(self.base_url, type(exc).__name__) from None
        except httpx.HTTPError as exc:
            raise ApiTransportError(self.base_url, type(exc).__name__) from None
        if response.status_code >= 400:
            raise _api_error(response, path)
        if response.status_code == 204 or not response.content:
            return response.status_code, None
        try:
            return response.status_code, response.json()
        except ValueError:
            raise ApiError(response.status_code, "bad_response",
                           f"the API answered {method} /api{path} with a body that is not JSON",
                           path) from None

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, json: Any = None, headers: dict[str, str] | None = None) -> Any:
        return self.request("POST", path, json=json, headers=headers)

    def put(self, path: str, json: Any = None) -> Any:
        return self.request("PUT", path, json=json)

    def patch(self, path: str, json: Any = None) -> Any:
        return self.request("PATCH", path, json=json)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)


def _api_error(response: httpx.Response, path: str) -> ApiError:
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "message" in body:
        details = body.get("details")
        return ApiError(status, str(body.get("error") or "error"), str(body["message"]), path,
                        details if isinstance(details, list) else [])
    text = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
    message = f"the API answered HTTP {status}" + (f": {text}" if text else "")
    return ApiError(status, "http_error", message, path)


def client_from_env() -> ApiClient:
    """A client for ``PUSHPOOL_API_URL`` with ``PUSHPOOL_API_TOKEN`` when it is set."""
    return ApiClient(api_url_from_env(), os.environ.get("PUSHPOOL_API_TOKEN") or None)
