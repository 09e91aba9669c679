"""Platform adapters. Each SDK is imported only here, and only when a config names it."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from service.config import Account, SandboxOptions
from service.errors import ConfigError, ConfigProblem
from service.platforms.base import Platform

# platform name -> module that provides ``build(account, state_dir, clock)``
_MODULES = {
    "sandbox": "service.platforms.sandbox",
    "bluesky": "service.platforms.bluesky",
    "mastodon": "service.platforms.mastodon",
    "x": "service.platforms.x",
    "facebook": "service.platforms.facebook",
    "linkedin": "service.platforms.exported",
    "instagram": "service.platforms.exported",
}


def build_adapter(
    account: Account, state_dir: Path, clock: Callable[[], datetime] | None = None
) -> Platform:
    """The adapter for one configured account; its SDK is imported on this first use."""
    if account.platform == "sandbox":
        from service.platforms.sandbox import SandboxPlatform

        safe = "".join(c if c.isalnum() else "_" for c in account.handle)
        return SandboxPlatform(
            account.handle,
            account.sandbox or SandboxOptions(),
            state_dir / "sandbox" / f"{safe}.json",
            clock=clock,
        )
    module = _MODULES.get(account.platform)
    if module is None:
        raise ConfigError(
            [
                ConfigProblem(
                    f"platform {account.platform!r} is not available in this version yet",
                    key=f"accounts[{account.key}].platform",
                )
            ]
        )
    built: Platform = importlib.import_module(module).build(account, state_dir, clock)
    return built
