"""GET /: the chat page, one static HTML + JS file with no build step."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["ui"])
PAGE = Path(__file__).resolve().parents[1] / "static" / "chat.html"


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def chat_page() -> HTMLResponse:
    """The chat page: question box, mode and adapter pickers, streamed answer, numbered citations."""
    return HTMLResponse(PAGE.read_text(encoding="utf-8"))
