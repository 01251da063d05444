"""Sizes and ages written as Docker writes them, so labkit's tables can be compared with
Docker's cell by cell (go-units ``HumanSizeWithPrecision`` and ``HumanDuration``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime


def human_size(n: float) -> str:
    """Docker's sizes: decimal units, three significant digits ("1.99MB", "117MB")."""
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n /= 1000
        i += 1
    return f"{n:.3g}{units[i]}"


def human_age(created: str, now: datetime | None = None) -> str:
    """Docker's CREATED column ("6 hours ago"), from an RFC 3339 time."""
    try:
        when = _trim(created)
    except ValueError:
        return "N/A"
    s = int(((now or datetime.now(UTC)) - when).total_seconds())
    if s < 1:
        return "Less than a second ago"
    if s < 60:
        return f"{s} second{'s' if s > 1 else ''} ago"
    minutes, hours = s // 60, int(s / 3600 + 0.5)
    if minutes == 1:
        return "About a minute ago"
    if minutes < 60:
        return f"{minutes} minutes ago"
    if hours == 1:
        return "About an hour ago"
    for limit, unit, div in ((48, "hours", 1), (24 * 14, "days", 24), (24 * 60, "weeks", 168),
                             (24 * 730, "months", 720)):  # fmt: skip
        if hours < limit:
            return f"{hours // div} {unit} ago"
    return f"{s // 3600 // 24 // 365} years ago"


def _trim(created: str) -> datetime:
    """Go writes nanoseconds; Python reads at most microseconds."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", created.replace("Z", "+00:00"))
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=UTC)
