"""Turn the library's input errors into non-retryable Temporal failures with a readable message."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from temporalio.exceptions import ApplicationError

from pmls.ml.errors import DataError


@contextlib.contextmanager
def input_errors() -> Iterator[None]:
    try:
        yield
    except DataError as exc:
        raise ApplicationError(str(exc), type="DataError", non_retryable=True) from None
