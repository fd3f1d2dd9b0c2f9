"""HTTP errors that carry their own status, code and headers; the app renders them as `{error: {...}}`."""

from __future__ import annotations

from fastapi.responses import JSONResponse


class ApiError(Exception):
    """A request the server refuses on purpose (limits, auth, load), never a bug."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}}, headers=headers)


def busy(retry_after_s: int = 1) -> ApiError:
    return ApiError(503, "overloaded", "the generation queue is full; retry later", {"Retry-After": str(retry_after_s)})


def shutting_down() -> ApiError:
    return ApiError(503, "unavailable", "the server is shutting down", {"Retry-After": "5"})


def deadline_exceeded(seconds: float) -> ApiError:
    return ApiError(504, "deadline_exceeded", f"the request did not finish within {seconds:g} s")


class ClientGone(Exception):
    """The client disconnected; its generation was stopped and nobody waits for a reply."""
