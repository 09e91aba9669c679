"""The application context the commands share: configuration, store, adapters, clock.

Kept apart from ``cli.py`` so that the daemon and the review page open things the same way.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from service import config as cfg
from service.config import Account as AccountConfig
from service.config import LoadedConfig
from service.errors import ConfigError, ConfigProblem, LopperError, MissingExtra
from service.logs import bind_run, get_logger, register_secrets

if TYPE_CHECKING:
    # Imported where they are used: a command that only reads the store does not load the
    # sync, the executor or the platforms' adapters.
    from service.platforms.base import Platform
    from service.removals import ExecutionReport
    from service.store import Store
    from service.suggestions import EvaluationReport
    from service.sync import Progress, SyncReport

log = get_logger("lopper")


class AccountSkipped(LopperError):
    """An account cannot run (missing secret, disabled, unknown platform)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


# Server addresses that may be given among an account's credentials: not secret, and an
# error must be able to say which server failed.
ADDRESS_KEYS = frozenset({"api_base_url", "base_url"})


def _secrets_of(loaded: LoadedConfig) -> list[str]:
    s = loaded.settings
    values = [
        v.get_secret_value()
        for a in s.accounts
        for k, v in a.credentials.items()
        if k not in ADDRESS_KEYS
    ]
    if s.digest.smtp.password is not None:
        values.append(s.digest.smtp.password.get_secret_value())
    if s.web.secret is not None:
        values.append(s.web.secret.get_secret_value())
    if s.storage.url is not None:
        from sqlalchemy.engine import make_url

        try:
            password = make_url(s.storage.url.get_secret_value()).password
        except Exception:
            password = None
        if password:
            values.append(str(password))
    return values


@dataclass
class App:
    loaded: LoadedConfig
    clock: Callable[[], datetime] = utcnow
    _store: Store | None = None
    _adapters: dict[str, Platform] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None, clock: Callable[[], datetime] = utcnow) -> App:
        found = cfg.find_config(path)
        if not found.exists():
            raise ConfigError(
                [
                    ConfigProblem(
                        f"no configuration at {found}. Run `lopper demo` to try lopper on a "
                        "simulated network, or copy config.example.yaml there and edit it"
                    )
                ]
            )
        loaded = cfg.load_config(found)
        register_secrets(_secrets_of(loaded))
        return cls(loaded, clock)

    @property
    def settings(self) -> cfg.Settings:
        return self.loaded.settings

    @property
    def database_url(self) -> str:
        url = self.settings.storage.url
        return url.get_secret_value() if url is not None else cfg.default_database_url()

    @property
    def store(self) -> Store:
        if self._store is None:
            from service.store import open_store

            self._store = open_store(self.database_url)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.dispose()
            self._store = None

    def accounts(self, key: str | None = None) -> list[AccountConfig]:
        if key is not None:
            return [self.settings.account(key)]
        return [a for a in self.settings.accounts if a.enabled]

    def adapter(self, account: AccountConfig) -> Platform:
        missing = self.loaded.account_ready(account.key)
        if missing:
            names = ", ".join(f"${{{m}}}" for m in missing)
            raise AccountSkipped(
                f"{account.key} skipped: its secret {names} is not set (environment variable, "
                "or a file of that name in $CREDENTIALS_DIRECTORY)"
            )
        if account.key not in self._adapters:
            from service.platforms import build_adapter

            try:
                built = build_adapter(account, cfg.state_dir(), self.clock)
            except MissingExtra as exc:
                raise AccountSkipped(f"{account.key} skipped: {exc}") from None
            self._adapters[account.key] = built
        return self._adapters[account.key]

    def spacing(self, account: AccountConfig, adapter: Platform) -> tuple[float, float]:
        if account.removal_spacing is not None:
            low, high = account.removal_spacing
            return (low.total_seconds(), high.total_seconds())
        return adapter.traits.removal_spacing

    # -- units of work, each bound to a run id and the account -----------------------------

    def sync(
        self,
        account: AccountConfig,
        progress: Progress | None = None,
        *,
        full: bool = False,
        run_id: str | None = None,
    ) -> SyncReport:
        from service.sync import sync_account

        run_id = run_id or uuid.uuid4().hex[:12]
        bind_run(run_id, account=account.key, job="sync")
        adapter = self.adapter(account)
        report = sync_account(
            self.store,
            account,
            adapter,
            self.settings.rules,
            self.clock,
            run_id=run_id,
            progress=progress,
            relist_after=None if full else self.settings.schedule.relist_every,
        )
        log.info(
            "sync finished",
            outcome=report.outcome,
            seen=report.connections_seen,
            new=report.connections_new,
            vanished=report.connections_vanished,
            interactions=report.interactions_new,
            brake=report.brake,
        )
        return report

    def evaluate(self, account: AccountConfig, *, run_id: str | None = None) -> EvaluationReport:
        from service.suggestions import evaluate_account

        bind_run(run_id or uuid.uuid4().hex[:12], account=account.key, job="evaluate")
        return evaluate_account(
            self.store,
            account.key,
            self.settings.rules,
            self.clock(),
            accepted=account.accept_unseen,
        )

    def execute(
        self,
        account: AccountConfig,
        sleep: Callable[[float], None] | None = None,
        *,
        run_id: str | None = None,
    ) -> ExecutionReport:
        import time

        from service.removals import execute_account

        bind_run(run_id or uuid.uuid4().hex[:12], account=account.key, job="execute")
        adapter = self.adapter(account)
        return execute_account(
            self.store,
            account,
            adapter,
            self.settings.rules,
            self.clock,
            sleep=sleep or time.sleep,
            spacing=self.spacing(account, adapter),
        )

    def adapter_for_key(self, key: str) -> Platform:
        return self.adapter(self.settings.account(key))


@contextmanager
def opened(path: Path | None) -> Iterator[App]:
    app = App.load(path)
    try:
        yield app
    finally:
        app.close()
