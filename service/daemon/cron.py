"""The digest's schedule: a five-field cron expression in the person's time zone.

APScheduler 3 computes the fire times, with one trap avoided: its day-of-week numbers start
at Monday (0 = Monday) where cron's start at Sunday (0 and 7 = Sunday), so
``0 8 * * 1`` would mail on Tuesdays. Numbers are turned into names before it sees them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo

from apscheduler.triggers.cron import CronTrigger

_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
_ITEM = re.compile(r"^(\d)(?:-(\d))?(/\d+)?$")


def _weekday_item(item: str) -> str:
    match = _ITEM.match(item)
    if match is None:
        return item  # names, "*", "*/2": APScheduler reads those as cron does
    first, last, step = int(match[1]), match[2], match[3] or ""
    if first > 7 or (last is not None and int(last) > 7):
        raise ValueError(f"day of week {item!r} is out of range (0-7, 0 and 7 are Sunday)")
    if last is None:
        return _NAMES[first] + step
    end = int(last)
    if first == 0 and end >= 1 and not step:
        # cron's 0-N starts on Sunday; APScheduler's weeks start on Monday.
        return "sun" + ("" if end == 7 else f",mon-{_NAMES[end]}" if end > 1 else ",mon")
    if end == 7 and not step:
        return f"{_NAMES[first]}-sat,sun" if first < 6 else "sat,sun"
    return f"{_NAMES[first]}-{_NAMES[end]}{step}"


def trigger(expression: str, zone: tzinfo | str) -> CronTrigger:
    """A CronTrigger for a crontab line; ValueError (with the reason) on a bad one."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError("expected a cron expression with five fields, e.g. '0 8 * * mon'")
    fields[4] = ",".join(_weekday_item(i) for i in fields[4].split(","))
    return CronTrigger.from_crontab(" ".join(fields), timezone=zone)


# (expression, zone) -> the slot last found and the fire time after it: between the two,
# both answers are known without asking the trigger again (the daemon asks every minute).
_known: dict[tuple[str, str], tuple[datetime, datetime]] = {}


def _cached(
    expression: str, zone: tzinfo | str, moment: datetime
) -> tuple[datetime, datetime] | None:
    known = _known.get((expression, str(zone)))
    if known is not None and known[0] <= moment < known[1]:
        return known
    return None


def next_fire(expression: str, zone: tzinfo | str, after: datetime) -> datetime | None:
    """The first fire time strictly after ``after`` (aware UTC)."""
    known = _cached(expression, zone, after)
    if known is not None:
        return known[1]
    fire: datetime | None = trigger(expression, zone).get_next_fire_time(
        None, after + timedelta(microseconds=1)
    )
    return fire.astimezone(UTC) if fire is not None else None


def latest_fire(expression: str, zone: tzinfo | str, now: datetime) -> datetime | None:
    """The last fire time at or before ``now`` (aware UTC): the slot ``now`` belongs to.

    Searched backwards in windows that double, so that neither a once-a-year schedule nor
    an every-minute one costs more than a few dozen steps.
    """
    known = _cached(expression, zone, now)
    if known is not None:
        return known[0]
    cron = trigger(expression, zone)
    window = timedelta(hours=1)
    while window <= timedelta(days=366 * 8):
        fire = cron.get_next_fire_time(None, now - window)
        if fire is not None and fire <= now:
            latest = fire
            while True:
                following = cron.get_next_fire_time(latest, latest + timedelta(seconds=1))
                if following is None or following > now:
                    found: datetime = latest.astimezone(UTC)
                    if following is not None:
                        _known[(expression, str(zone))] = (found, following.astimezone(UTC))
                    return found
                latest = following
        window *= 2
    return None
