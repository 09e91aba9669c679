"""Files lopper writes: 0600, in folders it makes 0700, whatever the umask.

A digest preview or an outbox file carries a working review link; an export names the people
removed. The state folder may have been made loose by hand, the umask may be 022: what lopper
writes is still readable by its owner only. Folders that already exist are left as they
are (a folder of the person's own, given as ``--output`` or ``digest.folder``), except the
ones lopper keeps inside its state folder, which are tightened.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO

FILE_MODE = 0o600
FOLDER_MODE = 0o700


def private_folder(folder: Path, *, tighten: bool = False) -> None:
    """Make ``folder`` (and each missing folder above it) 0700; ``tighten``: also when it
    exists already (the folders lopper keeps in its state folder)."""
    missing: list[Path] = []
    here = folder
    while not here.exists() and here != here.parent:
        missing.append(here)
        here = here.parent
    for each in reversed(missing):
        try:
            each.mkdir(mode=FOLDER_MODE)
        except FileExistsError:
            continue  # made at the same moment by another process
        os.chmod(each, FOLDER_MODE)  # mkdir's mode is reduced by the umask, never raised
    if tighten and stat.S_IMODE(folder.stat().st_mode) != FOLDER_MODE:
        os.chmod(folder, FOLDER_MODE)


def open_private(path: Path) -> IO[str]:
    """``path`` opened for writing text (truncated), 0600 whatever it was before."""
    private_folder(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        return os.fdopen(fd, "w", newline="", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise


def write_private(path: Path, data: bytes, *, tighten_folder: bool = False) -> None:
    """Write ``path`` atomically (a reader sees the old file or the new one), 0600."""
    private_folder(path.parent, tighten=tighten_folder)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)


def readable_by_others(folder: Path) -> bool:
    """True when users other than the owner may list or read ``folder``."""
    try:
        return bool(stat.S_IMODE(folder.stat().st_mode) & 0o077)
    except OSError:
        return False
