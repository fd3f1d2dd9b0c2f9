"""Bearer API keys with read/admin scopes, and a per-key rate limit.

With no key configured the server runs open but only for loopback clients (`ragtune serve` also
binds to loopback then); keys are compared in constant time.
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

from ragtune.core.config import ApiKey, ServingConfig
from ragtune.serving.errors import ApiError

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


class RateLimiter:
    """Sliding one-minute window per identity; thread-safe, in-process."""

    def __init__(self, per_minute: int | None) -> None:
        self.per_minute = per_minute
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, who: str) -> None:
        if self.per_minute is None:
            return
        now = time.monotonic()
        with self._lock:
            hits = self._hits.setdefault(who, deque())
            while hits and hits[0] <= now - 60:
                hits.popleft()
            if len(hits) >= self.per_minute:
                wait = max(1, math.ceil(60 - (now - hits[0])))
                raise ApiError(
                    429, "rate_limited", f"more than {self.per_minute} requests a minute", {"Retry-After": str(wait)}
                )
            hits.append(now)


class KeyRing:
    def __init__(self, config: ServingConfig) -> None:
        self.keys: list[ApiKey] = list(config.api_keys)
        self.limiter = RateLimiter(config.rate_limit_per_minute)

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
            if key is None:
                raise ApiError(401, "unauthorized", "missing or unknown API key (Authorization: Bearer <key>)")
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
