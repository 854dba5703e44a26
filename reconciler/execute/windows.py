"""Change windows: whether destructive actions may run now, and when they next may.

Pure (the time is passed in). The executor asks `in_change_window` before a
destructive action starts; when it had to leave one waiting, the controller asks
`next_opening` so the scheduler comes back as the window opens (`Requeue`), not
at the next interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from reconciler.model.kinds import ChangeWindow

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _minutes(clock: str) -> int:
    return int(clock[:2]) * 60 + int(clock[3:])


def in_change_window(windows: Sequence[ChangeWindow], now: datetime) -> bool:
    """True when there are no windows, or `now` falls inside one of them."""
    if not windows:
        return True
    for window in windows:
        local = now.astimezone(ZoneInfo(window.timezone))
        minute = local.hour * 60 + local.minute
        if DAYS[local.weekday()] in window.days and (
            _minutes(window.start) <= minute < _minutes(window.end)
        ):
            return True
    return False


def next_opening(windows: Sequence[ChangeWindow], now: datetime) -> datetime | None:
    """The first moment after `now` when a window opens (None: no window is declared)."""
    openings = []
    for window in windows:
        zone = ZoneInfo(window.timezone)
        local = now.astimezone(zone)
        start = _minutes(window.start)
        for ahead in range(8):  # every weekday comes back within a week
            day = (local + timedelta(days=ahead)).date()
            if DAYS[day.weekday()] not in window.days:
                continue
            opens = datetime(day.year, day.month, day.day, start // 60, start % 60, tzinfo=zone)
            if opens > now:
                openings.append(opens)
                break
    return min(openings) if openings else None


__all__ = ["in_change_window", "next_opening"]
