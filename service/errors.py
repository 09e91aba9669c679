"""The library's own exceptions. Only ``cli.py`` turns them into messages and exit codes."""

from __future__ import annotations

from dataclasses import dataclass

EX_CONFIG = 78  # sysexits.h: configuration error; systemd's RestartPreventExitStatus=78
EX_USAGE = 2  # as Click: the command line asks for something that is not there
EX_DATAERR = 65
EX_UNAVAILABLE = 69
EX_INTERRUPTED = 130  # as a shell says of a command stopped by Ctrl-C (128 + SIGINT)


class LopperError(Exception):
    """Base of every error the command line knows how to explain."""

    exit_code = 1


@dataclass(frozen=True)
class ConfigProblem:
    message: str
    key: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.key:
            where.append(self.key)
        return f"{', '.join(where)}: {self.message}" if where else self.message


class ConfigError(LopperError):
    exit_code = EX_CONFIG

    def __init__(self, problems: list[ConfigProblem], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        lines = [f"{source}: {p}" if source else str(p) for p in problems]
        super().__init__("\n".join(lines))


class StoreError(LopperError):
    """The database cannot be opened or is not in the expected shape."""

    exit_code = EX_CONFIG


class MissingExtra(LopperError):
    """A configured platform's SDK is not installed (its extra of the package)."""

    exit_code = EX_CONFIG

    def __init__(self, platform: str, module: str | None) -> None:
        self.platform = platform
        missing = f" (no module named {module!r})" if module else ""
        super().__init__(
            f"{platform} needs its SDK, which is not installed{missing}: "
            f"pip install 'lopper[{platform}]' (from a checkout: pip install '.[{platform}]')"
        )


class UnknownAccount(LopperError):
    """The command line names an account the configuration does not have."""

    exit_code = EX_USAGE


class NotFound(LopperError):
    exit_code = EX_DATAERR


class InvalidTransition(LopperError):
    """A suggestion was asked to move to a state its current state does not lead to."""

    exit_code = EX_DATAERR
