"""What ``lopper status`` tells of the schedule: next runs, last digest, last error.

Read from the store with the same rules the daemon plans by, so it is right whether or not
a daemon runs (and whichever replica it is).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.config import Settings
from service.daemon import cron
from service.daemon import due as d
from service.store.models import JobRun, JobState


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def schedule_status(session: Session, settings: Settings, now: datetime) -> dict[str, Any]:
    """Per account key: ``next_runs``, ``last_error``; and the digest's ``last``/``next``."""
    first_start = d.first_start_of(session)
    dues = d.all_dues(session, settings, now, first_start=first_start or now)
    accounts: dict[str, dict[str, Any]] = {}
    for item in dues:
        if item.account == d.GLOBAL:
            continue
        entry = accounts.setdefault(item.account, {"next_runs": {}})
        # Due already: it runs at the daemon's next look (or at its start).
        when = max(item.at, now) if item.at is not None else None
        entry["next_runs"][item.job] = _iso(when)
    for key, entry in accounts.items():
        failed = session.scalars(
            select(JobRun)
            .where(JobRun.account == key, JobRun.state == JobState.FAILED)
            .order_by(JobRun.id.desc())
            .limit(1)
        ).first()
        entry["last_error"] = (
            {"job": failed.job, "at": _iso(failed.finished_at), "detail": failed.detail}
            if failed is not None
            else None
        )
    last = session.scalars(
        select(JobRun)
        .where(JobRun.job == d.DIGEST, JobRun.state == JobState.DONE)
        .order_by(JobRun.id.desc())
        .limit(1)
    ).first()
    digest_next = next((item for item in dues if item.job == d.DIGEST), None)
    upcoming = digest_next.at if digest_next is not None else None
    if upcoming is None:
        upcoming = cron.next_fire(settings.schedule.digest, settings.digest.zone, now)
    return {
        "accounts": accounts,
        "digest": {
            "last": {"slot": _iso(last.slot), "at": _iso(last.finished_at), "detail": last.detail}
            if last is not None
            else None,
            "next": _iso(max(upcoming, now) if upcoming is not None else None),
        },
        "daemon_first_start": _iso(first_start),
    }
