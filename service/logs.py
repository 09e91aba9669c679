"""Logging with structlog: key=value on a terminal, JSON lines otherwise (journald).

Every secret the configuration holds is registered here and masked in every log line,
whatever the key it travels under (invariant 7).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO
from urllib.parse import quote, quote_plus


def _import_structlog() -> Any:
    """structlog, imported as if Rich's traceback and pretty-printing modules were absent.

    When Rich is installed, structlog's console renderer and its dict tracebacks import
    them at structlog's own import, and Pygments with them: about 2.7 MiB that the
    long-running service would hold for nothing, since lopper formats exceptions as plain
    text before any renderer sees them (``format_exc_info`` below) and Typer's Rich
    tracebacks are off. They stay importable for anything else afterwards.
    """
    if "structlog" in sys.modules:
        return sys.modules["structlog"]
    hidden = ("rich.traceback", "rich.pretty")
    before = {name: sys.modules[name] for name in hidden if name in sys.modules}
    for name in hidden:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # "import" raises ImportError
    try:
        import structlog
    finally:
        for name in hidden:
            if name in before:
                sys.modules[name] = before[name]
            else:
                sys.modules.pop(name, None)
    return structlog


structlog = _import_structlog()

MASK = "****"
_PERCENT = re.compile(r"%[0-9A-F]{2}")
_secrets: set[str] = set()
_SENSITIVE_KEYS = ("token", "password", "secret", "authorization", "credential", "api_key")


def encodings(secret: str) -> set[str]:
    """The secret as it travels: in a URL's query (percent-encoded, once or twice, with
    either case of hex digits, ``+`` for a space), in JSON, in HTML, in base64."""
    found = {secret}
    percent = {quote(secret, safe=""), quote(secret), quote_plus(secret)}
    percent |= {quote(value, safe="") for value in list(percent)}  # encoded twice
    percent |= {_PERCENT.sub(lambda m: m[0].lower(), value) for value in percent}
    found |= percent
    for ascii_only in (False, True):
        escaped = json.dumps(secret, ensure_ascii=ascii_only)[1:-1]
        found |= {escaped, escaped.replace("/", "\\/")}
    found.add(html.escape(secret))
    found.add(html.escape(secret, quote=False))
    raw = secret.encode("utf-8")
    found.add(base64.b64encode(raw).decode("ascii").rstrip("="))
    found.add(base64.urlsafe_b64encode(raw).decode("ascii").rstrip("="))
    return found


def register_secrets(values: Iterable[str]) -> None:
    """Remember secret values, and every encoding of them, so no log line can carry them."""
    for value in values:
        if value and len(value) >= 4:
            _secrets.update(encodings(value))


def forget_secrets() -> None:
    _secrets.clear()


def scrub(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub_value(v) for v in value)
    if isinstance(value, BaseException):
        return scrub(str(value))
    return value


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key == "exc_info":
            continue  # formatted later, then scrubbed as text (see configure_logging)
        if any(word in key.lower() for word in _SENSITIVE_KEYS):
            event[key] = MASK
        else:
            event[key] = _scrub_value(event[key])
    return event


def _scrub_rendered(_logger: Any, _name: str, rendered: Any) -> Any:
    # Last line of defence: tracebacks and stdlib messages are rendered before this.
    return scrub(rendered)


class _StandardError(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a line is logged, not when logging began.

    A progress display on the terminal stands in for standard error while it runs, and
    prints each line above its bars instead of through them.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure_logging(
    *, json: bool | None = None, level: str = "INFO", stream: TextIO | None = None
) -> None:
    handler = logging.StreamHandler(stream) if stream is not None else _StandardError()
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            # Scrub the traceback text before a renderer escapes it past recognition.
            redact,
            renderer,
            _scrub_rendered,
        ],
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("alembic", "sqlalchemy.engine"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str) -> Any:
    """A structlog logger; every module logs through this one import of structlog."""
    return structlog.get_logger(name)


def clear_context() -> None:
    """Forget what ``bind_run`` bound: the lines that follow belong to no run."""
    structlog.contextvars.clear_contextvars()


def bind_run(run_id: str, **values: Any) -> None:
    """Start a unit of work: every line logged until the next call carries these."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(run_id=run_id, **values)
