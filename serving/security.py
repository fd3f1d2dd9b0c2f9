"""Bearer API keys with read/admin scopes, a per-key rate limit, and a per-client limit on requests
without a valid key.

With no key configured the server runs open but only for loopback clients (`ragtune serve` also
binds to loopback then), and only for requests addressed to a loopback name (`LoopbackHosts`: a
web page can reach 127.0.0.1 by DNS rebinding, but its requests then name its own host); keys are
compared in constant time.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as AsgiScope

from ragtune.core.config import ApiKey, ServingConfig
from ragtune.serving.errors import ApiError, error_response

Scope = Literal["read", "admin"]
bearer = HTTPBearer(auto_error=False, description="API key from serving.api_keys")


def is_loopback(host: str | None) -> bool:
    """True for loopback addresses; names that are not IPs (the test client) count as local."""
    if not host:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost" or host == "testclient"


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "testserver"})  # testserver: the test client's
MAX_TRACKED = 10_000  # identities a rate limiter remembers before it forgets the idle ones


def host_name(header: str) -> str:
    """The name in a Host header, without its port: `[::1]:8000` -> `::1`, `Localhost.:80` -> `localhost`."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0].rstrip(".") if value.count(":") <= 1 else value


class LoopbackHosts:
    """ASGI middleware for a server without keys: requests must name a loopback host (421 otherwise)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            raw = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
            if host_name(raw) not in LOOPBACK_NAMES:
                shown = raw[:100].encode("unicode_escape").decode("ascii")
                reply = error_response(
                    421,
                    "misdirected_host",
                    f"Host '{shown}' is not a loopback name: with no API key configured the server only answers "
                    "requests to localhost, 127.0.0.1 or [::1] (set serving.api_keys to serve other names)",
                )
                await reply(scope, receive, send)
                return
        await self.app(scope, receive, send)


class RateLimiter:
    """Sliding one-minute window per identity; thread-safe, in-process."""

    def __init__(self, per_minute: int | None, what: str = "requests") -> None:
        self.per_minute = per_minute
        self.what = what
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, who: str) -> None:
        if self.per_minute is None:
            return
        now = time.monotonic()
        with self._lock:
            if len(self._hits) > MAX_TRACKED:  # many clients (or spoofed ones): forget the idle
                self._hits = {k: v for k, v in self._hits.items() if v and v[-1] > now - 60}
            hits = self._hits.setdefault(who, deque())
            while hits and hits[0] <= now - 60:
                hits.popleft()
            if len(hits) >= self.per_minute:
                wait = max(1, math.ceil(60 - (now - hits[0])))
                raise ApiError(
                    429, "rate_limited", f"more than {self.per_minute} {self.what} a minute", {"Retry-After": str(wait)}
                )
            hits.append(now)


class KeyRing:
    def __init__(self, config: ServingConfig) -> None:
        self.keys: list[ApiKey] = list(config.api_keys)
        self.limiter = RateLimiter(config.rate_limit_per_minute)
        self.unauthenticated = RateLimiter(config.unauthenticated_per_minute, "requests without a valid key")

    @property
    def open(self) -> bool:
        return not self.keys

    def identify(self, token: str | None) -> ApiKey | None:
        if token is None:
            return None
        given = token.encode()
        found = None
        for key in self.keys:  # check all keys, so timing says nothing about which one matched
            if hmac.compare_digest(given, key.key.get_secret_value().encode()):
                found = key
        return found

    def authorize(self, request: Request, token: str | None, scope: Scope) -> str:
        """The caller's identity for rate limiting, or an ApiError (401/403)."""
        client = request.client.host if request.client else None
        if self.open:
            if not is_loopback(client):
                raise ApiError(403, "forbidden", "no API key is configured, so only loopback clients are served")
            who = f"client:{client}"
        else:
            key = self.identify(token)
            if key is None:  # key guessing is bounded per client address
                self.unauthenticated.check(f"client:{client}")
                raise ApiError(
                    401,
                    "unauthorized",
                    "missing or unknown API key (Authorization: Bearer <key>)",
                    {"WWW-Authenticate": 'Bearer realm="ragtune"'},
                )
            if scope == "admin" and key.scope != "admin":
                raise ApiError(403, "forbidden", "this operation needs an admin key")
            who = f"key:{key.name or hmac.new(b'rt', key.key.get_secret_value().encode(), 'sha256').hexdigest()[:8]}"
        self.limiter.check(who)
        return who


def require(scope: Scope) -> Callable[..., str]:
    """FastAPI dependency: the route needs a key of this scope (or admin)."""

    def dependency(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
        ring: KeyRing = request.app.state.keys
        return ring.authorize(request, creds.credentials if creds else None, scope)

    return dependency


read_access = Depends(require("read"))
admin_access = Depends(require("admin"))
