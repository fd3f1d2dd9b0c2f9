"""One FastAPI router per capability."""
