"""A platform's data export, read the same way whether it is a zip or its unpacked folder.

Exports are large (a Facebook export runs to gigabytes), so members are opened as streams,
never read whole by this module. Whatever goes wrong while reading one member (a truncated
zip, a bad checksum, bytes that are not text) becomes an :class:`ExportError` that names the
export and the member, so the person knows which file to look at.

An export is untrusted input. Before anything is read it is refused when a member's path is
absolute or climbs out with ``..``, when it holds more than :data:`MAX_MEMBERS` files, and,
for the members a reader will read (:meth:`Export.check`), when one expands beyond
:data:`MAX_MEMBER_SIZE`, all of them beyond :data:`MAX_TOTAL_SIZE`, or a large one expands
more than :data:`MAX_RATIO` times its compressed size (a compression bomb: real exports
compress 5 to 20 times). A zip member never yields more bytes than its header declares.
"""

from __future__ import annotations

import fnmatch
import io
import re
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO

from service.errors import EX_DATAERR, LopperError


class ExportError(LopperError):
    """The export cannot be read: not found, not an export of this kind, or damaged."""

    exit_code = EX_DATAERR


MAX_MEMBERS = 500_000  # files in one export (a large Facebook export with photos: ~100,000)
MAX_MEMBER_SIZE = 4 << 30  # one member, expanded
MAX_TOTAL_SIZE = 32 << 30  # every member a reader reads, expanded
MAX_RATIO = 200  # expanded / compressed, for members past RATIO_FLOOR
RATIO_FLOOR = 64 << 10  # a small member may compress well: alone it cannot hurt


def _unsafe(name: str) -> bool:
    """A member path that is absolute or climbs out of the export."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return True
    return any(part == ".." for part in re.split(r"[/\\]", name))


def _natural_key(name: str) -> list[object]:
    """``part2`` before ``part10``: archives split a file into numbered parts."""
    return [int(piece) if piece.isdigit() else piece for piece in re.split(r"(\d+)", name)]


@dataclass
class Export:
    """The files of one export, by their path inside it (``/``-separated)."""

    path: Path
    _zip: zipfile.ZipFile | None = None
    _sizes: dict[str, int] = field(default_factory=dict)
    _packed: dict[str, int] = field(default_factory=dict)  # compressed sizes (zip only)
    dated: datetime | None = None  # the newest file date in it: when it was made, at the latest

    def names(self) -> list[str]:
        return sorted(self._sizes, key=_natural_key)

    def size(self, name: str) -> int:
        return self._sizes[name]

    def total_size(self, names: list[str]) -> int:
        return sum(self._sizes[name] for name in names)

    def find(self, *patterns: str, fold: bool = False) -> list[str]:
        """Members matching any of the shell patterns, in natural order.

        A pattern matches the member's whole path or any tail of it, so ``data/tweets.js``
        finds ``twitter-2024-01-01/data/tweets.js`` in an export unpacked with a top folder.
        ``fold``: without regard to case (``Messages.csv`` is ``messages.csv``).
        """
        if fold:
            patterns = tuple(p.casefold() for p in patterns)
        found = []
        for name in self.names():
            parts = PurePosixPath(name.casefold() if fold else name).parts
            tails = ["/".join(parts[i:]) for i in range(len(parts))]
            if any(fnmatch.fnmatchcase(t, p) for p in patterns for t in tails):
                found.append(name)
        return found

    def check(self, names: list[str]) -> None:
        """Refuse, before anything is read, members that would expand without bound."""
        total = 0
        for name in names:
            size = self._sizes[name]
            total += size
            if size > MAX_MEMBER_SIZE:
                raise ExportError(
                    f"{self.describe(name)}: expands to {size:,} bytes, more than the "
                    f"{MAX_MEMBER_SIZE:,} lopper reads from one file; refused"
                )
            packed = self._packed.get(name)
            if packed is not None and size > RATIO_FLOOR and size > MAX_RATIO * max(packed, 1):
                raise ExportError(
                    f"{self.describe(name)}: {packed:,} compressed bytes expand to {size:,} "
                    f"(more than {MAX_RATIO} times): not an export but a compression bomb; refused"
                )
        if total > MAX_TOTAL_SIZE:
            raise ExportError(
                f"{self.describe()}: the files to read expand to {total:,} bytes, more than "
                f"{MAX_TOTAL_SIZE:,}; refused"
            )

    def describe(self, name: str | None = None) -> str:
        return f"{self.path}:{name}" if name else str(self.path)

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        """The member as a binary stream; read errors name the member."""
        with self.reading(name):
            if self._zip is not None:
                if self._zip.getinfo(name).flag_bits & 0x1:
                    raise ExportError(
                        f"{self.describe(name)}: the zip is encrypted; unpack it first"
                    )
                self.check([name])
                with self._zip.open(name) as stream:
                    yield stream
            else:
                with (self.path / name).open("rb") as stream:
                    yield stream

    @contextmanager
    def open_text(self, name: str, encoding: str = "utf-8-sig") -> Iterator[IO[str]]:
        with self.open(name) as raw:
            # newline="": CSV readers need the line ends as they are.
            yield io.TextIOWrapper(raw, encoding=encoding, newline="")

    @contextmanager
    def reading(self, name: str) -> Iterator[None]:
        """Turn a failure while reading a member into an error that names it."""
        try:
            yield
        except ExportError:
            raise
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise ExportError(f"{self.describe(name)}: the file is damaged ({exc})") from exc
        except NotImplementedError as exc:
            # zipfile: a member that needs a newer zip version or an unknown compression.
            raise ExportError(
                f"{self.describe(name)}: the file is damaged or uses a zip feature that "
                f"cannot be read ({exc})"
            ) from exc
        except UnicodeDecodeError as exc:
            raise ExportError(f"{self.describe(name)}: not text in {exc.encoding}") from exc
        except OSError as exc:
            raise ExportError(f"{self.describe(name)}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


@contextmanager
def open_export(path: Path) -> Iterator[Export]:
    """Open a zip file or a folder as an export."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ExportError(f"{path}: no such file or folder")
    if path.is_dir():
        sizes: dict[str, int] = {}
        newest = 0.0
        for p in path.rglob("*"):
            if p.is_file():
                if len(sizes) >= MAX_MEMBERS:
                    raise ExportError(f"{path}: more than {MAX_MEMBERS:,} files; refused")
                stat = p.stat()
                sizes[p.relative_to(path).as_posix()] = stat.st_size
                newest = max(newest, stat.st_mtime)
        dated = datetime.fromtimestamp(newest, UTC) if sizes else None
        export = Export(path, None, sizes, dated=dated)
    else:
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile as exc:
            raise ExportError(
                f"{path}: not a zip file or a folder (or the zip is truncated: {exc})"
            ) from exc
        except NotImplementedError as exc:
            raise ExportError(f"{path}: uses a zip feature that cannot be read ({exc})") from exc
        except OSError as exc:
            raise ExportError(f"{path}: {exc.strerror or exc}") from exc
        infos = [i for i in archive.infolist() if not i.is_dir()]
        if len(infos) > MAX_MEMBERS:
            archive.close()
            raise ExportError(f"{path}: more than {MAX_MEMBERS:,} files; refused")
        for info in infos:
            if _unsafe(info.filename):
                archive.close()
                raise ExportError(
                    f"{path}: holds a file named {info.filename!r}, outside the export "
                    "(an absolute path or ..); refused"
                )
        sizes = {i.filename: i.file_size for i in infos}
        packed = {i.filename: i.compress_size for i in infos}
        stamps = [i.date_time for i in infos]
        # Zip dates carry no zone: read as UTC (hours do not matter between two exports).
        try:
            dated = datetime(*max(stamps), tzinfo=UTC) if stamps else None
        except ValueError:  # a zero date some zip tools write
            dated = None
        export = Export(path, archive, sizes, packed, dated)
    try:
        yield export
    finally:
        export.close()
