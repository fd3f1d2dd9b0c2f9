"""HTTP errors that carry their own status, code and headers; the app renders them as `{error: {...}}`.

ragtune's own routes answer `{"error": {"code", "message"}}`; the OpenAI-compatible routes
(`OPENAI_PATHS`) answer as the OpenAI API does, `{"error": {"message", "type", "code", "param"}}`,
so OpenAI clients read the message and the error class they expect.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
OPENAI_PATHS = (CHAT_PATH, MODELS_PATH)


class ApiError(Exception):
    """A request the server refuses on purpose (limits, auth, load), never a bug; `param` names the
    request field at fault, where there is one."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.param = param


def is_openai_path(path: str) -> bool:
    return path in OPENAI_PATHS or path.startswith(f"{MODELS_PATH}/")


def openai_type(status: int) -> str:
    """The OpenAI error class of a status."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def error_body(status: int, code: str, message: str, param: str | None = None, openai: bool = False) -> dict[str, Any]:
    if openai:
        return {"error": {"message": message, "type": openai_type(status), "code": code, "param": param}}
    return {"error": {"code": code, "message": message}}


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    param: str | None = None,
    openai: bool = False,
) -> JSONResponse:
    return JSONResponse(status_code=status, content=error_body(status, code, message, param, openai), headers=headers)


def busy(retry_after_s: int = 1) -> ApiError:
    return ApiError(503, "overloaded", "the generation queue is full; retry later", {"Retry-After": str(retry_after_s)})


def shutting_down() -> ApiError:
    return ApiError(503, "unavailable", "the server is shutting down", {"Retry-After": "5"})


def deadline_exceeded(seconds: float) -> ApiError:
    return ApiError(504, "deadline_exceeded", f"the request did not finish within {seconds:g} s")


class ClientGone(Exception):
    """The client disconnected; its generation was stopped and nobody waits for a reply."""
