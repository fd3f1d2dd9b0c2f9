"""One exception family so the CLI and the API can turn any user mistake into one clear line."""


class RagtuneError(Exception):
    """A problem the user can fix (bad input, missing file, unknown id); never a bug."""


class ConfigError(RagtuneError):
    pass


class DataError(RagtuneError):
    pass


class NotFoundError(RagtuneError):
    pass


class UpstreamError(RagtuneError):
    """A generator server (`models.generator_backend: openai`) is unreachable (status 503) or
    answered with an error (status 502); the HTTP layer answers with that status and this message."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status
