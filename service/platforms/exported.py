"""Networks lopper knows only from the person's data export: LinkedIn and Instagram.

Neither offers an API that lists your connections or ends one, so there is nothing to sync
(``export_only``: the sync skips the account) and nothing to remove through an API: a
confirmed removal becomes the person's own click, from the link each connection carries
(``lopper suggestions --manual``), and the next import closes it. Everything else, from the
verdicts to the reduction plan and the digest, works on what the imports stored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from service.config import Account
from service.imports.names import instagram_link, linkedin_search_link
from service.model import Unseen
from service.platforms.base import (
    Capability,
    ConnectionPage,
    Identity,
    InteractionPage,
    Relationship,
    RemovalOutcome,
    Traits,
    Unsupported,
)


class ExportOnlyPlatform:
    name: ClassVar[str] = "export"
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    simulated: ClassVar[bool] = False
    traits: Traits = Traits(export_only=True)

    def __init__(self, handle: str) -> None:
        self.handle = handle

    def _unsupported(self) -> Unsupported:
        return Unsupported(
            f"{self.name} has no API lopper can use: run `lopper import {self.name} PATH`"
        )

    def whoami(self) -> Identity:
        return Identity(user_id=self.handle, handle=self.handle)

    def connections(self, cursor: str | None) -> ConnectionPage:
        raise self._unsupported()

    def interaction_streams(self) -> Sequence[str]:
        return ()

    def interactions(self, stream: str, cursor: str | None) -> InteractionPage:
        raise self._unsupported()

    def relationship(self, user_id: str) -> Relationship:
        raise self._unsupported()

    def remove(self, user_id: str) -> RemovalOutcome:
        raise self._unsupported()

    def restore(self, user_id: str) -> None:
        raise self._unsupported()

    def unseen(self) -> Sequence[Unseen]:
        return ()

    def profile_link(self, handle: str, user_id: str) -> str | None:
        if user_id.startswith("https://"):
            return user_id
        if self.name == "instagram":
            return instagram_link(handle)
        return linkedin_search_link(handle)


class LinkedInPlatform(ExportOnlyPlatform):
    name: ClassVar[str] = "linkedin"


class InstagramPlatform(ExportOnlyPlatform):
    name: ClassVar[str] = "instagram"


def build(
    account: Account, state_dir: Path, clock: Callable[[], datetime] | None = None
) -> ExportOnlyPlatform:
    kind = InstagramPlatform if account.platform == "instagram" else LinkedInPlatform
    return kind(account.handle)
