"""One exception family so the CLI and the API can turn any user mistake into one clear line."""


class RagtuneError(Exception):
    """A problem the user can fix (bad input, missing file, unknown id); never a bug."""


class ConfigError(RagtuneError):
    pass


class DataError(RagtuneError):
    pass


class NotFoundError(RagtuneError):
    pass
