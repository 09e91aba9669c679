"""Configuration: one YAML file, validated once by pydantic, with secrets kept out of it.

Secrets are written as ``${NAME}`` and resolved from the environment variable ``NAME``, else
from the file ``$CREDENTIALS_DIRECTORY/NAME`` (systemd's ``LoadCredential=``). A secret that
cannot be resolved is not an error while checking a file: the account that needs it is
reported and skipped at run time while the others go on.
"""

from __future__ import annotations

import difflib
import os
import re
import typing
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import platformdirs
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from service.errors import ConfigError, ConfigProblem, UnknownAccount
from service.model import Direction, Kind

APP = "lopper"
CONFIG_FILE = "config.yaml"
_SECRET_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Longer than any setting means: beyond it, date arithmetic overflows soon enough.
LONGEST = timedelta(days=36500)
DAY = timedelta(days=1)
YEARS_10 = timedelta(days=3650)
ABOVE_ZERO = timedelta(microseconds=1)  # a range's lower end: any duration longer than zero


def parse_duration(value: Any) -> timedelta:
    """Accept ``90``(seconds), ``"30m"``, ``"6h"``, ``"180d"``, ``"2w"``, up to a century."""
    parsed = _parse_duration(value)
    if abs(parsed) > LONGEST:
        raise ValueError(f"{value!r} is too long a duration (at most {LONGEST.days}d)")
    return parsed


def _parse_duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30m, 6h or 180d")
    parsed: timedelta | None = None
    try:
        if isinstance(value, int | float):
            parsed = timedelta(seconds=value)
        elif isinstance(value, str):
            match = _DURATION.match(value)
            if match:
                parsed = timedelta(seconds=float(match[1]) * _DURATION_UNITS[match[2]])
    except OverflowError:
        raise ValueError(f"{value!r} is too long a duration") from None
    if parsed is None:
        raise ValueError(f"expected a duration such as 30m, 6h or 180d, got {value!r}")
    return parsed


def _spoken(duration: timedelta) -> str:
    """A duration as the configuration writes it: 0s, 90s, 15m, 7d."""
    seconds = duration.total_seconds()
    for unit in ("d", "h", "m"):
        size = _DURATION_UNITS[unit]
        if seconds and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _DurationModel(_Model):
    # Each duration's range (inclusive); a field not named here: from 0 to ten years.
    # Ranges keep every date lopper computes from a setting within the calendar, and refuse
    # settings that mean nothing (a negative grace, everyone dormant at once).
    DURATION_RANGES: ClassVar[dict[str, tuple[timedelta, timedelta]]] = {}

    @field_validator("*", mode="before")
    @classmethod
    def _durations(cls, value: Any, info: Any) -> Any:
        annotation = cls.model_fields[info.field_name].annotation
        if annotation is timedelta or (annotation == timedelta | None and value is not None):
            duration = _parse_duration(value)
            low, high = cls.DURATION_RANGES.get(info.field_name, (timedelta(0), YEARS_10))
            if not low <= duration <= high:
                expected = (
                    f"longer than 0s and at most {_spoken(high)}"
                    if low == ABOVE_ZERO
                    else f"between {_spoken(low)} and {_spoken(high)}"
                )
                raise ValueError(f"expected {expected}, got {value}")
            return duration
        return value


class SandboxOptions(_Model):
    """Parameters of the simulated network (``platform: sandbox``)."""

    # The same seed always gives the same network.
    seed: int = 7
    # Connections in the simulated network.
    size: int = Field(3000, ge=1, le=2_000_000)
    silent_share: float = Field(0.7, ge=0, le=1, description="people who never interact")
    quiet_share: float = Field(0.25, ge=0, le=1, description="active people who go quiet")
    # Share of the connections who follow you back.
    mutual_share: float = Field(0.4, ge=0, le=1)
    gone_share: float = Field(0.01, ge=0, le=1, description="deleted or moved accounts")
    new_share: float = Field(0.03, ge=0, le=1, description="people followed in the last month")
    # Days of simulated past exchanges.
    history_days: int = Field(400, ge=1, le=5000)
    # Exchanges of an active person over the history, on average.
    events_per_active_person: float = Field(12.0, gt=0)


class FacebookOptions(_DurationModel):
    """Where and how lopper talks to Facebook's Graph API (``platform: facebook``)."""

    # Where Graph API requests go (a proxy, or a test server).
    graph_url: str = "https://graph.facebook.com/"
    # A current Graph API version; facebook-sdk's own list stops at v3.1 (see platforms/facebook.py).
    graph_version: str = Field("v25.0", pattern=r"^v\d+\.\d+$")
    # How far back your posts are read for comments and reactions, on every sync.
    posts_lookback: timedelta = timedelta(days=365)

    DURATION_RANGES: ClassVar[dict[str, tuple[timedelta, timedelta]]] = {
        "posts_lookback": (DAY, timedelta(days=3 * 3650)),
    }


class XPrices(_Model):
    """US dollars per resource read, or per write request: X's pay-per-use prices (2026).

    https://docs.x.com/x-api/getting-started/pricing — repeat reads of one resource within a
    UTC day are charged once; "owned reads" (your own app reading your own account's data)
    cost ``owned_read``.
    """

    # A post read (mentions, your posts, likes, quotes).
    post_read: float = Field(0.005, ge=0)
    # A user read (a profile looked up).
    user_read: float = Field(0.010, ge=0)
    follows_read: float = Field(0.010, ge=0)  # a person in a following/followers list
    # A direct message event read.
    dm_event_read: float = Field(0.010, ge=0)
    # Any read of your own data when `owned_app` is true.
    owned_read: float = Field(0.001, ge=0)
    follow: float = Field(0.015, ge=0)  # "User Interaction: Create"
    unfollow: float = Field(0.010, ge=0)  # "Interaction: Delete"


class XOptions(_DurationModel):
    """How lopper talks to X (``platform: x``)."""

    # oauth2: a user token from `lopper auth x` (client_id below); oauth1: the four keys
    # consumer_key, consumer_secret, access_token, access_token_secret in credentials.
    # Unset: oauth1 when those keys are given, else oauth2.
    auth: Literal["oauth2", "oauth1"] | None = None
    client_id: str | None = None  # the OAuth 2.0 client id of your X app
    redirect_uri: str = "http://127.0.0.1:8910/callback"  # as registered in the X app
    # Your latest posts whose likes, reposts and quotes are read, once a day: each costs
    # requests and reads (skipped when its counts did not change).
    recent_posts: int = Field(20, ge=0, le=100)
    # Stop X syncs (not confirmed removals) before the month's estimate would pass this.
    monthly_budget: float | None = Field(None, ge=0)
    # The X app belongs to this same account: its own data is read at the owned-read price.
    owned_app: bool = False
    # X's prices, to count what each sync costs; change them when X does.
    prices: XPrices = XPrices()
    # Requests go here instead of https://api.twitter.com (a proxy, or a test server).
    api_base_url: str | None = None
    # How seldom the complete lists of following and followers are read again: each person
    # listed is billed (at least a day apart; `lopper sync --full` lists at once).
    relist_every: timedelta = timedelta(days=7)

    DURATION_RANGES: ClassVar[dict[str, tuple[timedelta, timedelta]]] = {
        "relist_every": (timedelta(0), timedelta(days=365)),
    }


# Networks lopper reads from the person's data export only: no API, no sync.
EXPORT_ONLY = frozenset({"linkedin", "instagram"})


class Account(_Model):
    # The platform of this account.
    platform: Literal["sandbox", "x", "facebook", "mastodon", "bluesky", "linkedin", "instagram"]
    # Your handle there (`@you`, `@you@example.social`, `you.bsky.social`, `you.name`);
    # `platform:handle` names the account on the command line.
    handle: str = Field(min_length=1)
    # Secrets the platform needs, by name (`access_token`, `app_password`, the four OAuth 1.0a
    # keys of X), each written `${NAME}`.
    credentials: dict[str, SecretStr] = Field(default_factory=dict)
    # false: the account is skipped by every sync, evaluation and removal.
    enabled: bool = True
    # Options of `platform: sandbox`.
    sandbox: SandboxOptions | None = None
    # Options of `platform: facebook`.
    facebook: FacebookOptions | None = None
    # Options of `platform: x`.
    x: XOptions | None = None
    # The pause between two removals, drawn at random in [min, max] (default per platform).
    removal_spacing: tuple[timedelta, timedelta] | None = None
    # How long one request may wait for the platform's answer (None: the adapter's default).
    request_timeout: timedelta | None = None
    # Kinds of exchange the person accepts lopper cannot see on this account (`lopper status`
    # lists them): suggestions are then made without them, each saying what was unseen.
    accept_unseen: frozenset[Kind] = frozenset()

    @field_validator("request_timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> Any:
        if value is None:
            return None
        timeout = parse_duration(value)
        if not timedelta(seconds=0.1) <= timeout <= timedelta(minutes=10):
            raise ValueError("expected between 0.1s and 10m")
        return timeout

    def timeout_or(self, default: float) -> float:
        """``request_timeout`` in seconds, or the adapter's ``default``."""
        return default if self.request_timeout is None else self.request_timeout.total_seconds()

    @field_validator("removal_spacing", mode="before")
    @classmethod
    def _spacing(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, list | tuple) and len(value) == 2:
            low, high = _parse_duration(value[0]), _parse_duration(value[1])
            if not timedelta(0) <= low <= DAY or not timedelta(0) <= high <= DAY:
                raise ValueError(f"expected each between 0s and 1d, got {list(value)}")
            if low > high:
                raise ValueError("the first duration must not exceed the second")
            return (low, high)
        raise ValueError("expected [min, max], e.g. [20s, 90s]")

    @model_validator(mode="after")
    def _sandbox_options(self) -> Account:
        if self.sandbox is not None and self.platform != "sandbox":
            raise ValueError("'sandbox' options are only for platform: sandbox")
        if self.facebook is not None and self.platform != "facebook":
            raise ValueError("'facebook' options are only for platform: facebook")
        if self.x is not None and self.platform != "x":
            raise ValueError("'x' options are only for platform: x")
        return self

    @property
    def key(self) -> str:
        """Stable name of the account in the store and on the command line: ``x:@harry``."""
        return f"{self.platform}:{self.handle}"

    @property
    def export_only(self) -> bool:
        """Read from the person's data export only (``lopper import``); never synced."""
        return self.platform in EXPORT_ONLY


_DEFAULT_WEIGHTS = {
    Kind.MESSAGE: 5.0,
    Kind.REPLY: 3.0,
    Kind.COMMENT: 3.0,
    Kind.QUOTE: 2.5,
    Kind.MENTION: 2.0,
    Kind.REPOST: 1.5,
    Kind.REACTION: 1.0,
    Kind.LIKE: 1.0,
}


class Rules(_DurationModel):
    # How far back exchanges count.
    window: timedelta = timedelta(days=180)
    # New connections are exempt for this long (from when the connection began, or when lopper
    # first saw it).
    grace: timedelta = timedelta(days=30)
    # Which kinds of exchange count.
    count_kinds: frozenset[Kind] = frozenset(Kind)
    # Which directions count: `inbound` (theirs to you), `outbound` (yours to them).
    count_directions: frozenset[Direction] = frozenset(Direction)
    # A connection with fewer counted exchanges in the window is flagged.
    min_exchanges: int = Field(1, ge=1)
    # Handles never suggested.
    protected: frozenset[str] = frozenset()
    # Names of your platform lists whose members are never suggested.
    protected_lists: frozenset[str] = frozenset()
    # Never suggest someone who follows you back.
    protect_mutuals: bool = False
    # Suggestions queued per account and digest; the rest wait for later ones.
    per_digest_cap: int = Field(50, ge=1)
    # Removals carried out per account and day.
    daily_removal_cap: int = Field(25, ge=0)
    # The share of the network `lopper plan` keeps by default (e.g. 80%).
    target_keep: float | None = Field(None, gt=0, le=1)
    # How fast an exchange's weight in the value score fades. At 90 days the evaluation reads
    # sums the store keeps per person and 30 days; any other half-life gives the same figures
    # read from every exchange stored, which is slower (`docs/performance.md`).
    half_life: timedelta = timedelta(days=90)
    # The weight of each kind of exchange in the value score.
    weights: dict[Kind, float] = Field(default_factory=lambda: dict(_DEFAULT_WEIGHTS))
    # The weight of their exchanges towards you in the value score.
    inbound_weight: float = Field(1.0, ge=0)
    # The weight of your exchanges towards them in the value score.
    outbound_weight: float = Field(1.0, ge=0)
    # Nobody is flagged once the account's last complete sync or import is older than this.
    stale_after: timedelta = timedelta(days=7)
    # Connections whose own last post is older than this join the "gone or moved" lane
    # (unless you exchanged in the window). None: no such rule.
    dormant_after: timedelta | None = None
    # An exchange with the same person on a linked account (`lopper link`) counts too.
    count_linked: bool = True
    # The sanity brake: a sync that sees this share of the connections vanish at once ...
    brake_share: float = Field(0.1, gt=0, le=1)
    # ... and at least this many, marks nobody gone and flags nobody until a later sync agrees.
    brake_min: int = Field(20, ge=1)
    # A failed removal is tried this many times in all.
    max_attempts: int = Field(5, ge=1)
    # The pause after a removal's first failure; it doubles after each one.
    retry_after: timedelta = timedelta(minutes=10)
    # A removal you did by hand (`lopper done`) that the next import or sync still shows this
    # long after is asked of you again.
    manual_recheck_after: timedelta = timedelta(days=14)

    DURATION_RANGES: ClassVar[dict[str, tuple[timedelta, timedelta]]] = {
        "window": (DAY, YEARS_10),
        "grace": (timedelta(0), YEARS_10),
        "half_life": (DAY, YEARS_10),
        "stale_after": (timedelta(hours=1), YEARS_10),
        "dormant_after": (DAY, YEARS_10),
        "retry_after": (timedelta(seconds=1), timedelta(days=30)),
        "manual_recheck_after": (timedelta(hours=1), YEARS_10),
    }

    @field_validator("target_keep", mode="before")
    @classmethod
    def _percent(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().endswith("%"):
            return float(value.strip()[:-1]) / 100
        return value

    @field_validator("weights")
    @classmethod
    def _all_weights(cls, value: dict[Kind, float]) -> dict[Kind, float]:
        return {**_DEFAULT_WEIGHTS, **value}

    @field_validator("protected")
    @classmethod
    def _handles(cls, value: frozenset[str]) -> frozenset[str]:
        return frozenset(handle.lower() for handle in value)


class Schedule(_DurationModel):
    # Each account's sync.
    sync_every: timedelta = timedelta(hours=6)
    # Up to this much is added to each sync's time, so that syncs do not line up.
    sync_jitter: timedelta = timedelta(minutes=30)
    # Carrying out confirmed removals (within the daily cap).
    execute_every: timedelta = timedelta(minutes=15)
    # A complete listing of connections is fetched again only after this long.
    relist_every: timedelta = timedelta(hours=12)
    # When the digest goes: a cron expression in `digest.timezone` (0 and 7 are Sunday, as in
    # cron).
    digest: str = "0 8 * * mon"
    # How often `lopper run` looks for an undelivered digest to try again.
    deliver_every: timedelta = timedelta(minutes=5)
    # A job that failed (platform down, bad token) is tried again after this long.
    retry_after: timedelta = timedelta(minutes=15)
    # How long a claimed job stays another daemon's without a sign of life.
    lease: timedelta = timedelta(minutes=2)
    # How often a daemon that does not lead looks for work (PostgreSQL replicas).
    poll_every: timedelta = timedelta(seconds=15)
    # How many jobs run at once.
    workers: int = Field(2, ge=1, le=32)

    # Fractions of a second are allowed: tests run the daemon fast.
    DURATION_RANGES: ClassVar[dict[str, tuple[timedelta, timedelta]]] = {
        "sync_every": (ABOVE_ZERO, timedelta(days=365)),
        "sync_jitter": (timedelta(0), timedelta(days=30)),
        "execute_every": (ABOVE_ZERO, timedelta(days=30)),
        "relist_every": (timedelta(0), timedelta(days=365)),
        "deliver_every": (ABOVE_ZERO, timedelta(days=30)),
        "retry_after": (ABOVE_ZERO, timedelta(days=30)),
        "lease": (ABOVE_ZERO, DAY),
        "poll_every": (ABOVE_ZERO, DAY),
    }

    @model_validator(mode="after")
    def _positive(self) -> Schedule:
        if self.lease / 2 < self.poll_every:
            raise ValueError("lease must be at least twice poll_every (leases are renewed then)")
        return self

    @field_validator("digest")
    @classmethod
    def _cron(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError("expected a cron expression with five fields, e.g. '0 8 * * mon'")
        from service.daemon.cron import trigger

        try:
            trigger(value, "UTC")
        except ValueError as exc:
            raise ValueError(f"not a cron expression APScheduler can read: {exc}") from None
        return value


class Smtp(_Model):
    # The SMTP server.
    host: str = "localhost"
    # Its port (465 with `security: tls`).
    port: int = Field(587, ge=1, le=65535)
    # `starttls`, `tls` (implicit TLS) or `none`.
    security: Literal["starttls", "tls", "none"] = "starttls"
    # The login, if the server asks for one.
    username: str | None = None
    # The password, written `${NAME}`.
    password: SecretStr | None = None
    # The From: of the digest.
    sender: str = "lopper <lopper@localhost>"


class Digest(_DurationModel):
    # Who the digest goes to.
    recipients: list[str] = Field(default_factory=list)
    # The IANA time zone of the schedule and of every time in the digest.
    timezone: str = "UTC"
    # `smtp`, or `files`: `.eml` files in `folder`.
    delivery: Literal["files", "smtp"] = "files"
    # Where `delivery: files` writes (default: `outbox/` in the state directory).
    folder: Path | None = None
    # The mail server, for `delivery: smtp`.
    smtp: Smtp = Smtp()
    # The wait after a failed delivery; it doubles with each failure, up to 6 hours.
    retry_after: timedelta = timedelta(minutes=5)

    DURATION_RANGES: ClassVar[dict[str, tuple[timedelta, timedelta]]] = {
        "retry_after": (ABOVE_ZERO, timedelta(days=7)),
    }

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from exc
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class Storage(_Model):
    # The database: `sqlite:///PATH` or `postgresql+psycopg://USER@HOST/NAME` (default: SQLite in
    # the state directory).
    url: SecretStr | None = None

    @field_validator("url")
    @classmethod
    def _database_url(cls, value: SecretStr | None) -> SecretStr | None:
        # Only the shape here (the database is reached at run time); the URL is never
        # repeated in the message: it may hold a password.
        if value is None or not value.get_secret_value():
            return value
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            parsed = make_url(value.get_secret_value())
        except ValueError:
            raise ValueError("the port is not a number") from None
        except ArgumentError:
            raise ValueError(
                "not a database URL (expected e.g. sqlite:////var/lib/lopper/lopper.sqlite3 "
                "or postgresql+psycopg://user@host/db)"
            ) from None
        if parsed.port is not None and not 0 < parsed.port < 65536:
            raise ValueError(f"port {parsed.port} is out of range (1-65535)")
        return value


class Web(_DurationModel):
    """The review page the digest links to."""

    # `lopper run` serves the review page.
    enabled: bool = True
    # The address it listens on (default: this machine only).
    host: str = "127.0.0.1"
    # Its port.
    port: int = Field(8470, ge=0, le=65535)
    # What the links in the digest start with, when the page is reached through a proxy or
    # another name (e.g. https://lopper.example.net); default http://HOST:PORT.
    base_url: str | None = None
    # How long a review link stays good.
    link_ttl: timedelta = timedelta(days=14)
    # The key that signs the links. Unset: a random key kept in `link-secret` (0600) in the
    # state directory, made on first use.
    secret: SecretStr | None = None

    DURATION_RANGES: ClassVar[dict[str, tuple[timedelta, timedelta]]] = {
        "link_ttl": (ABOVE_ZERO, timedelta(days=365)),
    }

    @field_validator("base_url")
    @classmethod
    def _base(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"^https?://[^/?#\s]+(/[^?#\s]*)?$", value):
            raise ValueError("expected an http(s) URL such as https://lopper.example.net")
        return value.rstrip("/")

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return self.base_url or f"http://{host}:{self.port}"


class Settings(_Model):
    # The format of the file: always 1 for now.
    version: Literal[1]
    # Your own accounts, one entry each.
    accounts: list[Account] = Field(default_factory=list)
    # How lopper decides.
    rules: Rules = Rules()
    # When `lopper run` does what.
    schedule: Schedule = Schedule()
    # The digest email.
    digest: Digest = Digest()
    # Where the data lives.
    storage: Storage = Storage()
    # The review page.
    web: Web = Web()

    @model_validator(mode="after")
    def _unique_accounts(self) -> Settings:
        seen: set[str] = set()
        for account in self.accounts:
            if account.key in seen:
                raise ValueError(f"account {account.key} is listed twice")
            seen.add(account.key)
        return self

    def account(self, key: str) -> Account:
        for account in self.accounts:
            if account.key == key or account.handle == key:
                return account
        keys = [a.key for a in self.accounts]
        known = ", ".join(keys) or "none"
        close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UnknownAccount(f"no account {key!r} in the configuration (known: {known}){hint}")


@dataclass(frozen=True)
class LoadedConfig:
    settings: Settings
    path: Path | None
    warnings: list[ConfigProblem] = field(default_factory=list)
    missing_secrets: dict[str, list[str]] = field(default_factory=dict)

    def account_ready(self, key: str) -> list[str]:
        """Names of the secrets an account lacks (empty when it can run)."""
        return self.missing_secrets.get(key, [])


# --- locations -------------------------------------------------------------------------


def state_dir() -> Path:
    """``$STATE_DIRECTORY`` (systemd's StateDirectory=) else the XDG state directory.

    Made 0700 when it does not exist yet: it holds tokens, keys and the database, and
    whichever part of lopper writes there first must not leave it readable by others.
    """
    env = os.environ.get("STATE_DIRECTORY")
    path = Path(env.split(":")[0]) if env else Path(platformdirs.user_state_dir(APP))
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
    return path


def config_dir() -> Path:
    """``$CONFIGURATION_DIRECTORY`` (systemd's ConfigurationDirectory=) else XDG config."""
    env = os.environ.get("CONFIGURATION_DIRECTORY")
    if env:
        return Path(env.split(":")[0])
    return Path(platformdirs.user_config_dir(APP))


def default_config_path() -> Path:
    return config_dir() / CONFIG_FILE


def default_database_url() -> str:
    return f"sqlite:///{state_dir() / 'lopper.sqlite3'}"


# --- loading ---------------------------------------------------------------------------


# A configuration holds a few hundred values; aliases may repeat some, never explode them
# (a "billion laughs" of 443 bytes expands to 387 million).
EXPANDED_VALUES = 20_000
DEEPEST = 64


class _Refused(Exception):
    def __init__(self, problem: ConfigProblem) -> None:
        self.problem = problem


def _shape_problems(root: yaml.Node) -> list[ConfigProblem]:
    """What YAML allows and a configuration must not hold: aliases that expand beyond a
    budget or hold themselves, nesting beyond any setting, a key given twice in one mapping
    (YAML would silently keep the last). Counted on the node graph, never expanded."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    problems: list[ConfigProblem] = []

    def size(node: yaml.Node, path: tuple[Any, ...], depth: int) -> int:
        line = node.start_mark.line + 1
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_nodes:
            raise _Refused(ConfigProblem("an alias here refers to itself", _describe(path), line))
        if depth > DEEPEST:
            raise _Refused(ConfigProblem(f"nested more than {DEEPEST} levels deep", None, line))
        open_nodes.add(id(node))
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value != "<<":  # "<<" merges
                    here = key.start_mark.line + 1
                    first = seen.setdefault((key.tag, key.value), here)
                    if first != here:
                        problems.append(
                            ConfigProblem(
                                f"given twice, on lines {first} and {here}: YAML would keep "
                                "only the last; remove or merge one",
                                _describe((*path, key.value)),
                                here,
                            )
                        )
                total += size(key, path, depth + 1)
                total += size(value, (*path, getattr(key, "value", "?")), depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                total += size(item, (*path, index), depth + 1)
        open_nodes.discard(id(node))
        sizes[id(node)] = total
        if total > EXPANDED_VALUES:
            raise _Refused(
                ConfigProblem(
                    f"the aliases here expand to more than {EXPANDED_VALUES:,} values; write "
                    "the values out instead",
                    _describe(path),
                    line,
                )
            )
        return total

    try:
        size(root, (), 0)
    except _Refused as refused:
        return [refused.problem]
    return problems


def _line_index(root: yaml.Node | None) -> dict[tuple[Any, ...], int]:
    """Map each key path of a YAML document to its (1-based) line."""
    lines: dict[tuple[Any, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[Any, ...]) -> None:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = (*path, key.value)
                lines[sub] = key.start_mark.line + 1
                walk(value, sub)
                lines[sub] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*path, index))

    if root is not None:
        walk(root, ())
    return lines


def _line_for(lines: dict[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int | None:
    path = tuple(loc)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None


def _credential_file(name: str) -> Path | None:
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return None
    candidate = Path(directory) / name
    return candidate if candidate.is_file() else None


def _resolve_secrets(
    data: Any, path: tuple[Any, ...], missing: list[tuple[tuple[Any, ...], str]]
) -> Any:
    if isinstance(data, dict):
        return {k: _resolve_secrets(v, (*path, k), missing) for k, v in data.items()}
    if isinstance(data, list):
        return [_resolve_secrets(v, (*path, i), missing) for i, v in enumerate(data)]
    if isinstance(data, str) and _SECRET_REF.search(data):

        def substitute(match: re.Match[str]) -> str:
            name = match[1]
            if name in os.environ:
                return os.environ[name]
            file = _credential_file(name)
            if file is not None:
                return file.read_text(encoding="utf-8").rstrip("\r\n")
            missing.append((path, name))
            return ""

        return _SECRET_REF.sub(substitute, data)
    return data


def _describe(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model of the section at ``loc`` (``("rules",)`` -> Rules), if there is one."""
    model: type[BaseModel] | None = Settings
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        candidates = [field.annotation, *typing.get_args(field.annotation)]
        found = [
            inner
            for candidate in candidates
            for inner in (candidate, *typing.get_args(candidate))
            if isinstance(inner, type) and issubclass(inner, BaseModel)
        ]
        model = found[0] if found else None
    return model


def _did_you_mean(loc: tuple[Any, ...]) -> str:
    """ "; did you mean `window`?" for an unknown key close to a known one."""
    model = _model_at(loc[:-1])
    if model is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # pydantic adds the branch name of tagged unions and literal checks; drop those markers.
    return tuple(
        p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))
    )


def _bad_timestamp_line(text: str) -> int | None:
    """The line of the first YAML timestamp that names no real date."""
    loader = yaml.SafeLoader(text)
    try:
        nodes = [loader.get_single_node()]
        while nodes:
            node = nodes.pop(0)
            if isinstance(node, yaml.ScalarNode):
                if node.tag == "tag:yaml.org,2002:timestamp":
                    try:
                        loader.construct_yaml_timestamp(node)
                    except ValueError:
                        return int(node.start_mark.line) + 1
            elif isinstance(node, yaml.SequenceNode):
                nodes.extend(node.value)
            elif isinstance(node, yaml.MappingNode):
                nodes.extend(n for pair in node.value for n in pair)
    except yaml.YAMLError:
        return None
    finally:
        loader.dispose()
    return None


def load_config(path: Path | None = None, text: str | None = None) -> LoadedConfig:
    """Read, resolve and validate a configuration; raise ConfigError naming every problem."""
    source = str(path) if path is not None else "<config>"
    if text is None:
        if path is None:
            raise ConfigError([ConfigProblem("no configuration file given")])
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError([ConfigProblem(f"{path}: no such file")], source) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([ConfigProblem(f"{path}: cannot read it ({exc})")], source) from None
    root: yaml.Node | None = None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        pass  # safe_load below says what is wrong, and where
    except RecursionError:
        raise ConfigError(
            [ConfigProblem(f"not valid YAML here: nested more than {DEEPEST} levels deep")],
            source,
        ) from None
    if root is not None:
        shape = _shape_problems(root)
        if shape:
            raise ConfigError(shape, source)
    try:
        raw = yaml.safe_load(text)
    except ValueError as exc:
        # PyYAML's timestamp constructor: a date that does not exist (2001-02-30).
        where = _bad_timestamp_line(text)
        raise ConfigError([ConfigProblem(f"not a date: {exc}", line=where)], source) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            [ConfigProblem(f"not valid YAML: {problem}", line=line)], source
        ) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            [ConfigProblem("the file must hold a mapping (key: value)", line=1)], source
        )
    lines = _line_index(root)
    missing: list[tuple[tuple[Any, ...], str]] = []
    resolved = _resolve_secrets(raw, (), missing)
    try:
        settings = Settings.model_validate(resolved)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = _clean_loc(tuple(error["loc"]))
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden" and loc and isinstance(loc[-1], str):
                message = "not a key lopper knows" + _did_you_mean(loc)
            problems.append(ConfigProblem(message, key=_describe(loc), line=_line_for(lines, loc)))
        raise ConfigError(problems, source) from None

    warnings: list[ConfigProblem] = []
    missing_by_account: dict[str, list[str]] = {}
    for loc, name in missing:
        line = _line_for(lines, loc)
        if len(loc) >= 2 and loc[0] == "accounts" and isinstance(loc[1], int):
            key = settings.accounts[loc[1]].key
            missing_by_account.setdefault(key, []).append(name)
            message = f"secret ${{{name}}} is not set; account {key} will be skipped until it is"
        else:
            message = f"secret ${{{name}}} is not set"
        warnings.append(ConfigProblem(message, key=_describe(loc), line=line))
    return LoadedConfig(settings, path, warnings, missing_by_account)


def find_config(explicit: Path | None) -> Path:
    """``--config``, else ``$CONFIGURATION_DIRECTORY/config.yaml``, else the XDG config dir."""
    if explicit is not None:
        return explicit
    env = os.environ.get("LOPPER_CONFIG")
    if env:
        return Path(env)
    return default_config_path()
