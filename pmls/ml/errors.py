"""Errors about the user's data or request, to be reported as bad input (never retried)."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input, named by its request path (e.g. ``dataset_config.target``) so the user can fix it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self):
        # Default exception pickling passes only str(self) back to __init__, which needs two arguments.
        return (type(self), (self.field, self.message))
