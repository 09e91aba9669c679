"""Commands of the long-running service: ``lopper run``."""

from __future__ import annotations

import os

from service.cli import _state, app, err
from service.errors import EX_UNAVAILABLE, StoreError


@app.command("run")
def run() -> None:
    """Run the service: sync, evaluate, remove and send digests on the configured schedule.

    Stays in the foreground (systemd: Type=notify). SIGTERM or Ctrl-C stops it after the
    current page; SIGHUP reloads the configuration. Exits 78 on a bad configuration.
    """
    from service.app import App
    from service.daemon.runner import run as run_daemon
    from service.logs import configure_logging

    json_logs = _state.get("json_logs")
    if json_logs is None and os.environ.get("JOURNAL_STREAM"):
        json_logs = True  # journald reads JSON lines into fields
    configure_logging(json=json_logs, level="DEBUG" if _state.get("verbose") else "INFO")
    application = App.load(_state["config"])
    try:
        application.store  # noqa: B018 (open and migrate it now, before anything starts)
    except StoreError as exc:
        if "cannot open the database" not in str(exc):
            raise  # a wrong URL or a file that is no database: a configuration problem (78)
        # The server is away (not yet up at boot, a network cut): worth another try later,
        # so not 78, which tells systemd not to restart.
        err.print(f"lopper: {exc}", highlight=False, markup=False)
        raise SystemExit(EX_UNAVAILABLE) from None
    run_daemon(application)
