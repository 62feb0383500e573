"""Error types every face understands; the API maps them to HTTP statuses in one place."""


class PmlsError(Exception):
    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class UnauthenticatedError(PmlsError):
    """401: no credential, or one the service does not accept."""


class ForbiddenError(PmlsError):
    """403: a valid credential without the scope the call needs."""


class TooManyError(PmlsError):
    """429: the caller has as many jobs running as it may; try again later."""


class NotFoundError(PmlsError):
    """404: no such job or model."""


class ConflictError(PmlsError):
    """409: the id exists with a different request."""


class InvalidError(PmlsError):
    """422: the request breaks a rule of this deployment's configuration (e.g. a source outside the data roots)."""


class UnsupportedError(PmlsError):
    """422: valid, but not something this version trains yet."""


class UnavailableError(PmlsError):
    """503: a required server (Temporal, PostgreSQL) cannot be reached."""
