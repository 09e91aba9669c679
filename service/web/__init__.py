"""The review page server: ``start(app)`` serves it from a background thread.

Werkzeug parses requests and routes them; its threaded server is enough for one person's
page on 127.0.0.1 (or behind a reverse proxy that terminates TLS).
"""

from __future__ import annotations

import contextlib
import io
import signal
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from service.errors import EX_UNAVAILABLE, LopperError
from service.logs import get_logger
from service.web.review import ReviewApp

if TYPE_CHECKING:
    from service.app import App

log = get_logger("lopper.web")

__all__ = ["ReviewApp", "ReviewServer", "WebUnavailable", "serve", "start"]


class _QuietHandler(WSGIRequestHandler):
    """One log line per request, without the path: a review link is a bearer token."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = self.path.split("?")[0]
        shown = "/review/…" if "/review/" in path else path
        log.debug("request", method=self.command, path=shown, status=str(code))

    def log(self, type: str, message: str, *args: Any) -> None:
        if type == "error":
            log.warning("web server", detail=(message % args).split("/review/")[0])


@dataclass
class ReviewServer:
    server: BaseWSGIServer
    url: str
    _thread: threading.Thread | None = field(default=None, repr=False)

    def stop(self) -> None:
        """Stop serving and close the socket; requests in flight are finished first."""
        self.server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.server.server_close()


class WebUnavailable(LopperError):
    """The review page cannot listen where the configuration says (the port is taken)."""

    exit_code = EX_UNAVAILABLE


def _make(app: App) -> ReviewServer:
    web = app.settings.web
    said = io.StringIO()
    try:
        # Werkzeug prints why it cannot listen and calls sys.exit(1): that would end the
        # daemon with it. Its words become the error instead.
        with contextlib.redirect_stderr(said):
            server = make_server(
                web.host, web.port, ReviewApp(app), threaded=True, request_handler=_QuietHandler
            )
    except (SystemExit, OSError) as exc:
        reason = " ".join(said.getvalue().split()) or str(exc)
        raise WebUnavailable(
            f"the review page cannot listen on {web.host}:{web.port}: {reason} "
            "(set web.port to a free port, or web.enabled: false)"
        ) from None
    host = f"[{web.host}]" if ":" in web.host else web.host
    url = web.base_url or f"http://{host}:{server.server_port}"
    return ReviewServer(server, url)


def start(app: App) -> ReviewServer:
    """Serve the review page from a background thread; ``.stop()`` ends it."""
    served = _make(app)
    thread = threading.Thread(
        target=served.server.serve_forever, name="lopper-web", kwargs={"poll_interval": 0.2}
    )
    thread.daemon = True
    served._thread = thread
    thread.start()
    log.info("review page serving", url=served.url)
    return served


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def serve(app: App) -> None:
    """Serve in the foreground until Ctrl-C or SIGTERM (``lopper web``)."""
    served = _make(app)
    log.info("review page serving", url=served.url)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        served.server.serve_forever(poll_interval=0.5)  # returns on KeyboardInterrupt
    finally:
        signal.signal(signal.SIGTERM, previous)
        served.server.server_close()
