"""Choosing the store: URLs, the environment, the embedded default, and clear errors."""

from __future__ import annotations

import pytest

from dispatch_core import (
    ConfigurationError,
    Engine,
    PluginMissingError,
    StoreUnavailableError,
    StoreURLError,
)
from dispatch_core.stores import MemoryStore


def test_memory_url() -> None:
    assert isinstance(Engine("memory://", load_entrypoints=False).store, MemoryStore)


def test_store_instance() -> None:
    store = MemoryStore()
    assert Engine(store, load_entrypoints=False).store is store


def test_unknown_scheme_lists_installed_schemes() -> None:
    with pytest.raises(
        StoreURLError,
        match=r"no installed plugin handles store URL scheme 'mongo'.*installed schemes: memory://",
    ):
        Engine("mongo://localhost/db", load_entrypoints=False)


def test_url_without_scheme() -> None:
    with pytest.raises(StoreURLError, match=r"has no scheme; expected e\.g\. sqlite:///jobs\.db"):
        Engine("jobs.db", load_entrypoints=False)


@pytest.mark.parametrize(
    ("url", "package"),
    [
        ("postgresql://localhost/app", "dispatch-postgres"),
        ("redis://localhost:6379/0", "dispatch-redis"),
        ("sqlite:///x.db", "dispatch-sqlite"),
    ],
)
def test_known_scheme_without_its_plugin_names_the_package(url: str, package: str) -> None:
    with pytest.raises(PluginMissingError, match=f"pip install {package}"):
        Engine(url, load_entrypoints=False)


def test_dispatch_url_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCH_URL", "memory://")
    assert isinstance(Engine(load_entrypoints=False).store, MemoryStore)


def test_no_url_and_no_sqlite_is_an_error_not_a_memory_default() -> None:
    with pytest.raises(ConfigurationError, match="pip install dispatch-sqlite"):
        Engine(load_entrypoints=False)


def test_no_url_defaults_to_sqlite_when_installed(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("dispatch_plugins.sqlite")
    monkeypatch.chdir(tmp_path)
    engine = Engine()
    assert engine.url == "sqlite:///dispatch.db"
    assert type(engine.store).__module__.startswith("dispatch_plugins.sqlite")


async def test_store_open_failure_is_a_clear_error() -> None:
    class Broken(MemoryStore):
        async def open(self) -> None:
            raise ConnectionRefusedError("connection refused")

    engine = Engine(Broken(), load_entrypoints=False)
    with pytest.raises(
        StoreUnavailableError, match="cannot open store memory://: connection refused"
    ):
        await engine.aopen()


def test_sync_enqueue_into_a_fresh_sqlite_file_migrates_first(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("dispatch_plugins.sqlite")
    engine = Engine(f"sqlite:///{tmp_path}/fresh.db")

    @engine.job(name="j")
    def j(n: int) -> None: ...

    job = j.enqueue(1)
    assert engine.get_job(job.id).payload == 1
    engine.close()


async def test_amigrate_reports_what_it_applied(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("dispatch_plugins.sqlite")
    engine = Engine(f"sqlite:///{tmp_path}/m.db", auto_migrate=False)
    applied = await engine.amigrate()
    assert applied
    assert await engine.amigrate() == []
    await engine.aclose()


async def test_corrupt_sqlite_file_is_a_clear_error_on_every_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("dispatch_plugins.sqlite")
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 100)
    engine = Engine(f"sqlite:///{path}")

    @engine.job(name="j")
    async def j() -> None: ...

    with pytest.raises(StoreUnavailableError, match=f"{path}.*not a SQLite database"):
        await j.aenqueue()
    with pytest.raises(StoreUnavailableError, match=f"{path}.*not a SQLite database"):
        await engine.worker().drain()

    def sync_enqueue() -> None:
        with pytest.raises(StoreUnavailableError, match=f"{path}.*not a SQLite database"):
            j.enqueue()

    import asyncio

    await asyncio.to_thread(sync_enqueue)
    assert path.read_text().startswith("these are my notes")  # nothing was written to it


def test_sync_calls_on_a_store_without_a_sync_driver_use_a_private_loop() -> None:
    class AsyncOnly(MemoryStore):
        def sync(self) -> None:  # type: ignore[override]
            return None

    store = AsyncOnly()
    engine = Engine(store, load_entrypoints=False)

    @engine.job(name="j")
    def j(n: int) -> None: ...

    job = j.enqueue(5)
    assert engine.get_job(job.id).payload == 5
    assert engine.cancel(job.id).state.value == "cancelled"
    # the very store object the engine was given holds the job, not a private copy
    assert store._jobs[job.id].state.value == "cancelled"
    engine.close()


async def test_store_errors_and_repr_never_show_the_password() -> None:
    pytest.importorskip("dispatch_plugins.postgres")
    engine = Engine(
        "postgresql://app:s3cret-pw@127.0.0.1:1/db?connect_timeout=1", load_entrypoints=True
    )
    assert "s3cret-pw" not in repr(engine)
    assert engine.safe_url == "postgresql://app:***@127.0.0.1:1/db?connect_timeout=1"
    with pytest.raises(StoreUnavailableError) as err:
        await engine.aopen()
    assert "s3cret-pw" not in str(err.value)
    assert "127.0.0.1" in str(err.value)
    await engine.aclose()
