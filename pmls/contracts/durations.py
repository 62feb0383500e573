"""Budgets as ISO-8601 durations (``PT2H``, ``P1DT30M``) or short forms (``90m``, ``2h``, ``45s``)."""

from __future__ import annotations

import re
from datetime import timedelta

_ISO = re.compile(
    r"^P(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)
_SHORT = re.compile(r"^(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>s|m|h|d)$")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    raw = text.strip()
    short = _SHORT.match(raw.lower())
    iso = _ISO.match(raw.upper())
    try:
        if short:
            return timedelta(**{_UNIT[short["unit"]]: float(short["value"])})
        if iso and raw.upper() not in ("P", "PT") and any(iso.groupdict().values()):
            return timedelta(**{k: float(v) for k, v in iso.groupdict().items() if v})
    except OverflowError:
        raise ValueError(f"{text!r} is too long a duration") from None
    raise ValueError(f"{text!r} is not a duration; use ISO-8601 such as PT2H or P1DT30M, or 90m / 2h / 45s")
