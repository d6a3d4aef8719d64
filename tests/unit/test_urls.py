"""Broker and backend URLs: scheme -> plug-in class, SQLite paths, and password masking."""

from __future__ import annotations

import importlib
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caraway.brokers.contracts import QueueAdmin
from caraway.brokers.memory.admin import MemoryAdmin
from caraway.brokers.memory.backend import MemoryBackend
from caraway.brokers.memory.transport import MemoryTransport
from caraway.brokers.registry import (
    ADMIN_ALIASES,
    BACKEND_ALIASES,
    BUS_ALIASES,
    MAILBOX_ALIASES,
    TRANSPORT_ALIASES,
    open_admin,
    open_backend,
    open_transport,
    preload,
)
from caraway.brokers.sqlite.admin import SQLiteAdmin
from caraway.brokers.sqlite.backend import SQLiteBackend
from caraway.brokers.sqlite.transport import SQLiteTransport
from caraway.clients.sqlite import sqlite_path
from caraway.clients.urls import default_sqlite_path, mask_url
from caraway.exceptions import ImproperlyConfigured


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_memory_url_opens_the_memory_transport() -> None:
    transport = open_transport("memory://urls-test", options={"visibility_timeout": 5})

    assert isinstance(transport, MemoryTransport)
    assert transport.options == {"visibility_timeout": 5}


@pytest.mark.parametrize("url", ["sqlite://", "SQLITE://"])
def test_bare_sqlite_url_means_the_default_file_in_the_current_directory(
    in_tmp: Path, url: str
) -> None:
    transport = open_transport(url)

    assert isinstance(transport, SQLiteTransport)
    assert transport.path == str(in_tmp / "caraway.sqlite3") == default_sqlite_path()


def test_sqlite_paths_follow_sqlalchemy_relative_and_absolute_forms(in_tmp: Path) -> None:
    assert sqlite_path("sqlite:///jobs.db") == str(in_tmp / "jobs.db")
    assert sqlite_path("sqlite:////var/lib/app/jobs.db") == "/var/lib/app/jobs.db"
    assert sqlite_path("db+sqlite:///results.db") == str(in_tmp / "results.db")


def test_sqlite_path_is_fixed_when_the_transport_is_opened(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport = open_transport("sqlite:///jobs.db")
    monkeypatch.chdir(in_tmp.parent)

    assert isinstance(transport, SQLiteTransport)
    assert transport.path == str(in_tmp / "jobs.db")


def test_sqlite_url_with_a_host_is_rejected_with_the_right_spelling() -> None:
    with pytest.raises(ImproperlyConfigured, match="sqlite:////absolute"):
        sqlite_path("sqlite://somehost/jobs.db")


@pytest.mark.parametrize(
    "scheme", ["redis", "rediss", "redis+socket", "sentinel", "amqp", "pyamqp", "amqps"]
)
def test_network_schemes_map_to_their_plug_in(scheme: str) -> None:
    expected = "RedisTransport" if "redis" in scheme or scheme == "sentinel" else "AMQPTransport"
    assert TRANSPORT_ALIASES[scheme].endswith(f":{expected}")


def test_unknown_scheme_is_an_error_listing_the_known_ones() -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        open_transport("kafka://localhost:9092")

    message = str(info.value)
    assert "'kafka'" in message
    for scheme in ("memory://", "sqlite://", "redis://", "amqp://"):
        assert scheme in message


def test_url_without_a_scheme_is_an_error() -> None:
    with pytest.raises(ImproperlyConfigured, match="no scheme"):
        open_transport("localhost:6379")


def test_missing_client_library_names_the_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "fake_redis_plugin.py").write_text("import redis\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "redis", None)  # makes `import redis` fail
    monkeypatch.setitem(TRANSPORT_ALIASES, "fakeredis", "fake_redis_plugin:Transport")

    with pytest.raises(ImproperlyConfigured, match=r"pip install 'caraway\[redis\]'"):
        open_transport("fakeredis://localhost")


def test_plug_in_not_shipped_yet_is_reported_as_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(TRANSPORT_ALIASES, "future", "caraway.brokers.no_such_module:X")

    with pytest.raises(ImproperlyConfigured, match="not available in this version"):
        open_transport("future://host")


def test_third_party_transport_is_found_through_its_entry_point(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry = metadata.EntryPoint(
        name="custom",
        value="caraway.brokers.memory.transport:MemoryTransport",
        group="caraway.transports",
    )

    def entry_points(*, group: str) -> list[metadata.EntryPoint]:
        return [entry] if group == "caraway.transports" else []

    monkeypatch.setattr(metadata, "entry_points", entry_points)

    assert isinstance(open_transport("custom://x"), MemoryTransport)


def test_entry_point_that_is_not_a_transport_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TRANSPORT_ALIASES, "wrong", "caraway.brokers.memory.backend:MemoryBackend")

    with pytest.raises(ImproperlyConfigured, match="not a Transport"):
        open_transport("wrong://x")


@pytest.mark.parametrize("url", ["memory://", "cache+memory://"])
def test_memory_backend_urls(url: str) -> None:
    assert isinstance(open_backend(url), MemoryBackend)


def test_bare_sqlite_backend_shares_the_default_file_with_the_broker(in_tmp: Path) -> None:
    backend = open_backend("sqlite://")

    assert isinstance(backend, SQLiteBackend)
    assert backend.path == default_sqlite_path() == str(in_tmp / "caraway.sqlite3")


def test_backend_schemes_include_redis_and_rpc() -> None:
    assert BACKEND_ALIASES["redis"].endswith(":RedisBackend")
    assert BACKEND_ALIASES["rpc"].endswith(":RPCBackend")


def test_unknown_backend_scheme_is_an_error_listing_the_known_ones() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"result backend scheme 'mongodb'.*rpc://"):
        open_backend("mongodb://localhost")


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:s3cret@localhost:6379/0", "redis://:**@localhost:6379/0"),
        ("amqp://guest:guest@localhost:5672//", "amqp://guest:**@localhost:5672//"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("sqlite:///jobs.db", "sqlite:///jobs.db"),
        (
            "sentinel://:a@h1:26379;sentinel://:b@h2:26379",
            "sentinel://:**@h1:26379;sentinel://:**@h2:26379",
        ),
    ],
)
def test_mask_url_hides_only_the_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        # Celery's failover lists: every URL of the list is masked
        (
            "amqp://a:pw1@h1:5672//;amqp://b:pw2@h2:5672//",
            "amqp://a:**@h1:5672//;amqp://b:**@h2:5672//",
        ),
        ("redis://:pw@h1:6379/0;redis://h2:6379/0", "redis://:**@h1:6379/0;redis://h2:6379/0"),
        # a ";" inside a password does not start another URL
        ("redis://:pa;ss@localhost:6379/0", "redis://:**@localhost:6379/0"),
        # an "@" inside a password: the host is what follows the last one
        ("redis://:p@ss@localhost:6379/0", "redis://:**@localhost:6379/0"),
        # the rest of the URL is kept byte for byte
        (
            "amqp://guest:pw@localhost:5672//?heartbeat=10",
            "amqp://guest:**@localhost:5672//?heartbeat=10",
        ),
    ],
)
def test_mask_url_masks_each_url_of_a_list_and_keeps_the_rest(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        # urllib refuses an unbalanced "[" outright
        ("redis://user:p[ss@localhost:6379/0", "redis://**@localhost:6379/0"),
        # a "/", "?" or "#" in the password cuts urllib's host short
        ("redis://:pa/ss@localhost:6379/0", "redis://**@localhost:6379/0"),
        ("redis://user:pa?ss@localhost", "redis://**@localhost"),
        ("redis://user:pa#ss@localhost", "redis://**@localhost"),
        ("redis://us/er:pass@localhost", "redis://**@localhost"),
        # urllib silently drops tabs and newlines
        ("redis://user:pa\nss@localhost/0", "redis://**@localhost/0"),
    ],
)
def test_mask_url_masks_all_the_userinfo_of_a_url_it_cannot_read(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_mask_url_keeps_a_url_without_userinfo_as_it_is() -> None:
    assert mask_url("redis://localhost/0?client_name=me@box") == (
        "redis://localhost/0?client_name=me@box"
    )
    assert mask_url("redis://user@localhost") == "redis://user@localhost"
    assert mask_url("not a url") == "not a url"


def test_mask_url_uses_the_mask_it_is_given() -> None:
    masked = mask_url("amqp://guest:pw@localhost//", mask="********")

    assert masked == "amqp://guest:********@localhost//"


@given(password=st.text(st.characters(codec="utf-8", exclude_characters=";"), min_size=1))
def test_mask_url_never_returns_the_password(password: str) -> None:
    secret = f"S3cr{password}"
    for url in (
        f"redis://user:{secret}@localhost:6379/0",
        f"amqp://guest:{secret}@localhost:5672//",
        f"sentinel://:{secret}@h1:26379;sentinel://:{secret}@h2:26379",
    ):
        assert secret not in mask_url(url)


def test_unknown_scheme_error_does_not_leak_the_password() -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        open_transport("kafka://user:hunter2@localhost")

    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "admin"),
    [("memory://urls-admin", MemoryAdmin), ("sqlite:///admin.db", SQLiteAdmin)],
)
def test_a_broker_url_opens_the_admin_of_the_same_broker(
    in_tmp: Path, url: str, admin: type[QueueAdmin]
) -> None:
    opened = open_admin(url, options={"busy_timeout": 1})

    try:
        assert isinstance(opened, admin)
        assert opened.options == {"busy_timeout": 1}
    finally:
        opened.close()


@pytest.mark.parametrize("scheme", sorted(TRANSPORT_ALIASES))
def test_every_broker_scheme_has_an_admin_mailbox_and_bus_of_the_same_broker(scheme: str) -> None:
    folder = TRANSPORT_ALIASES[scheme].rpartition(".transport:")[0]
    for aliases in (ADMIN_ALIASES, MAILBOX_ALIASES, BUS_ALIASES):
        assert aliases[scheme].startswith(f"{folder}.")


def test_unknown_admin_scheme_is_an_error_listing_the_known_ones() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"queue admin scheme 'kafka'.*redis://"):
        open_admin("kafka://localhost")


def test_preload_imports_the_mailbox_bus_and_backend_of_the_urls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    imported: list[str] = []
    real_import = importlib.import_module

    def import_module(name: str, package: str | None = None) -> Any:
        imported.append(name)
        return real_import(name, package)

    monkeypatch.setattr(importlib, "import_module", import_module)

    preload("sqlite://", backend_url="memory://")

    assert imported == [
        "caraway.brokers.sqlite.mailbox",
        "caraway.brokers.sqlite.bus",
        "caraway.brokers.memory.backend",
    ]


def test_preload_leaves_a_url_it_cannot_load_to_the_open_that_follows() -> None:
    preload("kafka://localhost", backend_url="mongodb://localhost")  # no error here
