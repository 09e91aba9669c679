"""Invariant 7: a registered secret never reaches a log line, whatever carries it."""

from __future__ import annotations

import io
import json
import logging
import re
from typing import Any

import pytest
import structlog

from service import logs

# Characters JSON escapes, so a leak through an escaped rendering is caught too.
TOKEN = 'sk-live-"Q7x\\9Zp-4f2b'


def walk(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*walk(k), *walk(v))]
    if isinstance(value, list):
        return [s for v in value for s in walk(v)]
    return []


def emit_everything() -> None:
    log = structlog.get_logger("lopper.test")
    log.info(f"calling the API with {TOKEN}")
    log.info("request", token=TOKEN, access_token=TOKEN, headers={"Authorization": TOKEN})
    log.warning("refused", detail=f"bearer {TOKEN} was refused", tried=[TOKEN, "other"])
    log.error("failed", error=RuntimeError(f"401 for {TOKEN}"))
    try:
        raise RuntimeError(f"the server echoed {TOKEN}")
    except RuntimeError:
        log.exception("crashed")
    logging.getLogger("some.library").warning("token=%s", TOKEN)
    try:
        raise ValueError(f"stdlib path {TOKEN}")
    except ValueError:
        logging.getLogger("some.library").exception("library crashed")


@pytest.mark.parametrize("as_json", [True, False])
def test_a_secret_never_reaches_the_output(as_json: bool) -> None:
    stream = io.StringIO()
    logs.register_secrets([TOKEN])
    logs.configure_logging(json=as_json, stream=stream)

    emit_everything()

    output = stream.getvalue()
    assert TOKEN not in output
    assert "Q7x" not in output
    # The tracebacks themselves were written, only without the secret.
    assert output.count("RuntimeError") >= 1
    assert "ValueError" in output
    assert logs.MASK in output
    if as_json:
        lines = [json.loads(line) for line in output.splitlines()]
        assert len(lines) == 7
        assert not [s for line in lines for s in walk(line) if "Q7x" in s]


def test_keys_that_name_a_secret_are_masked_even_when_not_registered() -> None:
    stream = io.StringIO()
    logs.configure_logging(json=True, stream=stream)

    structlog.get_logger().info("login", password="hunter22", smtp_password="x" * 8)

    line = json.loads(stream.getvalue())
    assert line["password"] == line["smtp_password"] == logs.MASK


def test_forgotten_secrets_are_no_longer_masked() -> None:
    logs.register_secrets([TOKEN, "abc"])
    assert logs.scrub(f"a {TOKEN} b") == f"a {logs.MASK} b"
    logs.forget_secrets()
    assert logs.scrub(f"a {TOKEN} b") == f"a {TOKEN} b"


def test_an_exception_passed_as_exc_info_keeps_its_traceback() -> None:
    stream = io.StringIO()
    logs.register_secrets([TOKEN])
    logs.configure_logging(json=True, stream=stream)
    try:
        raise ConnectionError(f"reset by peer, token {TOKEN}")
    except ConnectionError as exc:
        error = exc

    structlog.get_logger().error("sync failed", exc_info=error)

    line = json.loads(stream.getvalue())
    assert "ConnectionError" in line.get("exception", "")
    assert "Q7x" not in stream.getvalue()


# A Facebook-like token with the characters URLs, JSON and HTML encode.
ENCODABLE = 'EAAB+slash/eq=amp&q?lt<"quote"é'


def _encodings(secret: str) -> dict[str, str]:
    import base64
    import html
    from urllib.parse import quote, quote_plus

    percent = quote(secret, safe="")
    return {
        "percent": percent,
        "percent, lower-case hex": re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), percent),
        "percent, slash kept": quote(secret),
        "form (quote_plus)": quote_plus(secret),
        "percent twice": quote(percent, safe=""),
        "json": json.dumps(secret)[1:-1],
        "json, ascii": json.dumps(secret, ensure_ascii=True)[1:-1],
        "json, slash escaped": json.dumps(secret)[1:-1].replace("/", "\\/"),
        "html": html.escape(secret),
        "base64": base64.b64encode(secret.encode()).decode(),
        "base64, url-safe": base64.urlsafe_b64encode(secret.encode()).decode().rstrip("="),
    }


@pytest.mark.parametrize("encoding", sorted(_encodings(ENCODABLE)))
def test_every_encoding_of_a_secret_is_masked(encoding: str) -> None:
    """urllib3's debug line carries the token percent-encoded; a server echoes it in JSON."""
    encoded = _encodings(ENCODABLE)[encoding]
    assert encoded != ENCODABLE or encoding == "json"
    logs.register_secrets([ENCODABLE])
    stream = io.StringIO()
    logs.configure_logging(json=True, stream=stream, level="DEBUG")
    logging.getLogger("urllib3.connectionpool").debug(
        '%s://%s:%s "%s %s %s" %s %s',
        "https",
        "graph.facebook.com",
        443,
        "GET",
        f"/v25.0/me?access_token={encoded}&fields=id",
        "HTTP/1.1",
        200,
        None,
    )
    structlog.get_logger("lopper.test").warning("echoed", detail=f"url was ?t={encoded}")
    scrubbed = logs.scrub(f"a {encoded} b")
    assert encoded not in scrubbed and logs.MASK in scrubbed
    output = stream.getvalue()
    assert encoded not in output and "slash" not in output, output
    assert output.count(logs.MASK) >= 2
