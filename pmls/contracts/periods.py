"""ISO-8601 periods (``2024-01-01/2024-06-30``), parsed with the standard library only.

A period is closed-open: ``start <= t < end``. A date-only end means "through that whole day",
so ``2024-01-01/2024-06-30`` includes June 30 and ``2024-07-01/...`` can follow it with no gap.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime  # exclusive

    def overlaps(self, other: Period) -> bool:
        return self.start < other.end and other.start < self.end

    def __str__(self) -> str:
        return f"{self.start.isoformat()}/{self.end.isoformat()}"


def _parse_point(text: str, *, is_end: bool) -> datetime:
    text = text.strip()
    if not text:
        raise ValueError("empty bound")
    if len(text) == 10 and "T" not in text:
        day = date.fromisoformat(text)
        point = datetime(day.year, day.month, day.day)
        if is_end and day == date.max:
            raise ValueError("the end is past the last representable day; end the period earlier")
        return point + timedelta(days=1) if is_end else point
    point = datetime.fromisoformat(text.replace("Z", "+00:00"))
    # Naive and aware bounds compare against one time line: we work in naive UTC.
    if point.tzinfo is not None:
        try:
            point = point.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:
            raise ValueError("out of the representable range of dates") from None
    return point


def parse_period(text: str) -> Period:
    """Parse ``START/END``; raise ValueError with a message a user can act on."""
    if not isinstance(text, str) or text.count("/") != 1:
        raise ValueError(
            f"{text!r} is not an ISO-8601 interval; write it as START/END, e.g. 2024-01-01/2024-06-30"
        )
    left, right = text.split("/")
    try:
        start = _parse_point(left, is_end=False)
        end = _parse_point(right, is_end=True)
    except ValueError as exc:
        raise ValueError(
            f"{text!r} is not an ISO-8601 interval ({exc}); e.g. 2024-01-01/2024-06-30"
        ) from None
    if end <= start:
        raise ValueError(f"{text!r} is empty: its end is not after its start")
    return Period(start, end)
