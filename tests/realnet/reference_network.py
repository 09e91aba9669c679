"""The AT Protocol reference network's URLs, where its packages are, and the few calls the
realnet tests make on people's behalf (plain XRPC over HTTP, as any client would)."""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes.bluesky_server import micros_of, tid

HERE = Path(__file__).resolve().parent
START_TIMEOUT = 180.0  # seconds: a first start also migrates the AppView's database
ADMIN = "Basic " + base64.b64encode(b"admin:admin-pass").decode()  # dev-env's PDS admin


def install_dir() -> Path | None:
    named = os.environ.get("LOPPER_REALNET_DIR")
    if named:
        return Path(named)
    digest = hashlib.sha256(
        (HERE / "package.json").read_bytes() + (HERE / "package-lock.json").read_bytes()
    ).hexdigest()[:16]
    root = Path(os.environ.get("LOPPER_REALNET_CACHE") or Path.home() / ".cache/lopper-realnet")
    return root / digest


def postgres_url() -> str | None:
    url = os.environ.get("LOPPER_REALNET_PG")
    if url:
        return url
    test_url = os.environ.get("LOPPER_TEST_DATABASE_URL")
    if test_url:
        return re.sub(r"^postgresql\+\w+://", "postgresql://", test_url)
    return None


def schema_name() -> str:
    schema = os.environ.get("LOPPER_REALNET_SCHEMA", "lopper_realnet")
    if not re.fullmatch(r"[A-Za-z_]+", schema):
        raise pytest.UsageError(f"LOPPER_REALNET_SCHEMA must be letters and underscores: {schema}")
    return schema


def drop_schemas(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        for prefix in ("appview", "bsync", "ozone"):
            connection.execute(f'DROP SCHEMA IF EXISTS "{prefix}_{schema}" CASCADE')


@dataclass
class Account:
    handle: str
    did: str
    password: str
    access: str


@dataclass
class Network:
    """The running network, and the few calls the tests make on people's behalf."""

    plc: str
    pds: str
    bsky: str
    control: str
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60.0))
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def xrpc(self, nsid: str, *, token: str | None = None, body: Any = None, **params: Any) -> Any:
        headers = {}
        if token:
            headers["authorization"] = token if token.startswith("Basic ") else f"Bearer {token}"
        if body is None and nsid.split(".")[-1].startswith(("get", "list", "describe")):
            response = self.http.get(f"{self.pds}/xrpc/{nsid}", params=params, headers=headers)
        else:
            response = self.http.post(f"{self.pds}/xrpc/{nsid}", json=body, headers=headers)
        if response.status_code != 200:
            raise AssertionError(f"{nsid}: {response.status_code} {response.text}")
        return response.json() if response.content else None

    def create_account(self, name: str) -> Account:
        handle = f"{name}{next(self._names)}.test"
        password = f"pw-{handle}"
        answer = self.xrpc(
            "com.atproto.server.createAccount",
            body={"handle": handle, "email": f"{handle}@mail.test", "password": password},
        )
        return Account(handle, answer["did"], password, answer["accessJwt"])

    def app_password(self, account: Account, name: str = "lopper") -> str:
        answer = self.xrpc(
            "com.atproto.server.createAppPassword", token=account.access, body={"name": name}
        )
        return str(answer["password"])

    def revoke_app_password(self, account: Account, name: str = "lopper") -> None:
        self.xrpc("com.atproto.server.revokeAppPassword", token=account.access, body={"name": name})

    def create(
        self, account: Account, collection: str, record: dict[str, Any], rkey: str | None = None
    ) -> dict[str, str]:
        body: dict[str, Any] = {
            "repo": account.did,
            "collection": collection,
            "record": {"$type": collection, **record},
        }
        if rkey is not None:
            body["rkey"] = rkey
        answer = self.xrpc("com.atproto.repo.createRecord", token=account.access, body=body)
        return {"uri": answer["uri"], "cid": answer["cid"]}

    def delete_account(self, account: Account) -> None:
        self.xrpc("com.atproto.admin.deleteAccount", token=ADMIN, body={"did": account.did})

    def records(self, account: Account, collection: str) -> list[dict[str, Any]]:
        answer = self.xrpc(
            "com.atproto.repo.listRecords", repo=account.did, collection=collection, limit=100
        )
        return list(answer["records"])

    def process(self) -> None:
        """Wait until the AppView has indexed everything the PDS has written."""
        response = self.http.post(f"{self.control}/process", timeout=120.0)
        assert response.status_code == 200, response.text


def tid_at(moment: datetime, clock_id: int = 0) -> str:
    """A record key for ``moment`` (atproto TIDs: microseconds and a clock id)."""
    return tid(micros_of(moment), clock_id)
