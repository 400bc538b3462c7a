"""The API connection of the client commands: base URL and token resolution, requests, one-line errors."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import urlsplit, urlunsplit

import httpx

EXIT_USER = 2
"""Exit code for what the user can fix: a flag, a setting, a file, a request the API refused (4xx)."""
EXIT_SERVER = 1
"""Exit code for a server-side failure (5xx)."""
TIMEOUT_SECONDS = 30.0


class ClientError(Exception):
    """A client command failed; ``str()`` is the one line to print."""

    def __init__(self, message: str, exit_code: int = EXIT_USER) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Target:
    """Where the client commands go and who they are."""

    base_url: str
    """API base URL without a trailing slash."""
    token: str
    """Bearer token."""
    url_source: str
    """What named the URL (``--api``, ``GRADEFLOW_API_URL``, ...), for error messages."""

    @property
    def check_hint(self) -> str:
        """What to check when the API cannot be reached."""
        return "--api" if self.url_source == "--api" else f"{self.url_source} or pass --api"


def resolve_target(settings: Any, api: str | None, token: str | None) -> Target:
    """The API URL and token from the flags, else the settings; a ClientError naming what is missing."""
    if api:
        url, source = api, "--api"
    elif settings.api_url is not None:
        url, source = str(settings.api_url), "GRADEFLOW_API_URL"
    else:
        host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::", "") else settings.api_host
        host = f"[{host}]" if ":" in host else host
        url, source = f"http://{host}:{settings.api_port}", "GRADEFLOW_API_HOST/GRADEFLOW_API_PORT"
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ClientError(f"{source}: {url!r} is not an http(s) URL")
    raw = token if token is not None else (settings.token.get_secret_value() if settings.token else "")
    raw = raw.strip().removeprefix("Bearer ").strip()
    if not raw:
        raise ClientError("no token: pass --token or set GRADEFLOW_TOKEN "
                          "(e.g. GRADEFLOW_TOKEN=$(gradeflow token --tenant T --role reviewer))")
    base = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    return Target(base_url=base, token=raw, url_source=source)


def problem_line(resp: httpx.Response) -> str:
    """One line from an error response: status, title, detail and the invalid fields of a problem document."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = " ".join(resp.text.split())[:200]
        return f"{resp.status_code} {resp.reason_phrase}" + (f": {text}" if text else "")
    line = f"{resp.status_code} {body.get('title') or resp.reason_phrase}"
    if body.get("detail"):
        line += f": {body['detail']}"
    errors = body.get("errors") or []
    if errors:
        fields = "; ".join(f"{e.get('field', '?')}: {e.get('message', '')}" for e in errors[:5] if isinstance(e, dict))
        more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
        line += f" [{fields}{more}]"
    return " ".join(line.split())


class ApiClient:
    """An ``httpx.AsyncClient`` bound to a :class:`Target` that turns every failure into a :class:`ClientError`."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._http = httpx.AsyncClient(base_url=target.base_url, timeout=TIMEOUT_SECONDS,
                                       headers={"Authorization": f"Bearer {target.token}"})

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def request(self, method: str, path: str, *, what: str, json_body: Any = None,
                      params: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Any:
        """Send one request and return its JSON body.

        Args:
            method: HTTP method.
            path: path under the base URL.
            what: what is being done, for the error line (``create exam``).
            json_body: request body.
            params: query parameters (``None`` values are dropped).
            headers: extra headers.

        Raises:
            ClientError: API unreachable (names the URL's source), or any non-2xx answer in one line.

        """
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            resp = await self._http.request(method, path, json=json_body, params=query, headers=headers)
        except httpx.TimeoutException:
            raise ClientError(f"{what}: the API at {self.target.base_url} did not answer within "
                              f"{TIMEOUT_SECONDS:.0f}s ({self.target.url_source})", EXIT_SERVER) from None
        except httpx.HTTPError as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ClientError(f"{what}: cannot reach the API at {self.target.base_url} ({reason}); "
                              f"check {self.target.check_hint}") from None
        if resp.status_code >= 400:
            hint = " (check --token / GRADEFLOW_TOKEN)" if resp.status_code in (401, 403) else ""
            raise ClientError(f"{what}: {problem_line(resp)}{hint}",
                              EXIT_SERVER if resp.status_code >= 500 else EXIT_USER)
        if resp.status_code == 204:
            return None
        try:
            return resp.json()
        except json.JSONDecodeError:
            raise ClientError(f"{what}: the API answered {resp.status_code} without JSON", EXIT_SERVER) from None

    async def download(self, path: str, sink: BinaryIO, *, what: str, params: dict[str, Any] | None = None) -> int:
        """Stream a response body into ``sink`` chunk by chunk (constant memory); return the bytes written.

        Raises:
            ClientError: as :meth:`request` (a failure half-way through names the bytes received).

        """
        query = {k: v for k, v in (params or {}).items() if v is not None}
        written = 0
        try:
            async with self._http.stream("GET", path, params=query) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    hint = " (check --token / GRADEFLOW_TOKEN)" if resp.status_code in (401, 403) else ""
                    raise ClientError(f"{what}: {problem_line(resp)}{hint}",
                                      EXIT_SERVER if resp.status_code >= 500 else EXIT_USER)
                async for chunk in resp.aiter_bytes():
                    sink.write(chunk)
                    written += len(chunk)
        except httpx.TimeoutException:
            raise ClientError(f"{what}: the API at {self.target.base_url} stopped answering for "
                              f"{TIMEOUT_SECONDS:.0f}s after {written} bytes ({self.target.url_source})",
                              EXIT_SERVER) from None
        except httpx.HTTPError as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            if written:
                raise ClientError(f"{what}: the download broke off after {written} bytes ({reason})",
                                  EXIT_SERVER) from None
            raise ClientError(f"{what}: cannot reach the API at {self.target.base_url} ({reason}); "
                              f"check {self.target.check_hint}") from None
        return written

    def ws_url(self, path: str) -> str:
        """The ``ws(s)://`` URL of ``path``, with the token as ``?token=``."""
        parts = urlsplit(self.target.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path + path, f"token={self.target.token}", ""))
