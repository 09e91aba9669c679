"""Tokens that platforms hand back at run time (OAuth grants, refreshed sessions).

They live in 0600 files under ``<state>/tokens/`` (0700), one per account, written
atomically so that a crash mid-write leaves the previous token, never a torn one. They are
never stored in the database and never logged.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from service.logs import register_secrets


def token_path(state_dir: Path, account_key: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in account_key)
    return state_dir / "tokens" / f"{safe}.json"


def _private_folder(folder: Path) -> None:
    """``<state>/tokens`` and the state directory, 0700 when this makes them (mkdir's
    ``parents=True`` would give the folders above the last one the umask's mode)."""
    for each in (folder.parent, folder):
        if not each.exists():
            each.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)


def save_token(state_dir: Path, account_key: str, data: dict[str, Any]) -> Path:
    path = token_path(state_dir, account_key)
    _private_folder(path.parent)
    register_secrets(str(v) for v in data.values() if isinstance(v, str))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_token(state_dir: Path, account_key: str) -> dict[str, Any] | None:
    path = token_path(state_dir, account_key)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    register_secrets(str(v) for v in data.values() if isinstance(v, str))
    return data


@contextmanager
def token_lock(state_dir: Path, account_key: str) -> Iterator[None]:
    """Hold the account's token for a refresh that rotates it.

    A platform whose refresh tokens work once (X) must not be refreshed by two processes at
    the same time: the second would present a token the first already spent. The holder
    re-reads the file once it has the lock, since another process may have rotated it.
    """
    path = token_path(state_dir, account_key).with_suffix(".lock")
    _private_folder(path.parent)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
