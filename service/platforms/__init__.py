"""Platform adapters. Each SDK is imported only here, and only when a config names it."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import ModuleType

from service.config import Account, SandboxOptions
from service.errors import ConfigError, ConfigProblem, MissingExtra
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


# platform name -> the top-level modules its extra installs (`pip install 'lopper[NAME]'`)
SDKS = {
    "mastodon": ("mastodon", "requests"),
    "x": ("tweepy", "requests", "requests_oauthlib"),
    "bluesky": ("atproto_client", "atproto_core", "httpx"),
    "facebook": ("facebook", "requests"),
}


def missing_sdk(platform: str) -> str | None:
    """The first module of the platform's SDK that is not installed, without importing it."""
    for module in SDKS.get(platform, ()):
        if importlib.util.find_spec(module) is None:
            return module
    return None


def require_sdk(platform: str) -> None:
    """Stop with the extra to install when the platform's SDK is missing."""
    module = missing_sdk(platform)
    if module is not None:
        raise MissingExtra(platform, module)


def platform_module(platform: str) -> ModuleType:
    """The adapter module of a platform; a missing SDK says which extra to install."""
    name = _MODULES[platform]
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").partition(".")[0]
        if platform in SDKS and top != "service":
            raise MissingExtra(platform, exc.name) from None
        raise


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
    built: Platform = platform_module(account.platform).build(account, state_dir, clock)
    return built
