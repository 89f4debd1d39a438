"""The extension object: init_app, app factories, several apps, configuration."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask

from dispatch_core import (
    ConfigurationError,
    Constant,
    Engine,
    JobNotFoundError,
    JobState,
    Retention,
)
from dispatch_flask import DEFAULTS, Dispatch, DispatchConfig, WorkerSettings

MakeApp = Callable[..., Flask]
OnEngine = Callable[..., Any]


def test_init_app_stores_the_extension_and_adds_the_commands(
    dispatch: Dispatch, make_app: MakeApp
) -> None:
    app = make_app()
    assert app.extensions["dispatch"] is dispatch
    assert "dispatch" in app.cli.commands
    assert dispatch.get_engine(app).url == "memory://"
    # Missing keys were filled in, so app.config shows what is in force.
    for key in DEFAULTS:
        assert key in app.config
    assert app.config["DISPATCH_WORKER_CONCURRENCY"] == 10


def test_constructor_with_an_app_initializes_it() -> None:
    app = Flask("direct")
    app.config["DISPATCH_URL"] = "memory://"
    dispatch = Dispatch(app)
    assert app.extensions["dispatch"] is dispatch
    dispatch.get_engine(app).close()


def test_a_second_init_app_on_the_same_app_is_refused(
    dispatch: Dispatch, make_app: MakeApp
) -> None:
    app = make_app()
    engine = dispatch.get_engine(app)
    with pytest.raises(RuntimeError, match="already been registered on this Flask app"):
        dispatch.init_app(app)
    with pytest.raises(RuntimeError, match="Import and use that instance instead"):
        Dispatch().init_app(app)
    assert dispatch.get_engine(app) is engine  # the first registration is untouched


def test_several_apps_get_their_own_engine_and_store(
    on_engine: OnEngine, dispatch: Dispatch, make_app: MakeApp
) -> None:
    @dispatch.job(name="t.echo")
    def echo(n: int) -> int:
        return n

    one, two = make_app("one"), make_app("two")
    assert dispatch.get_engine(one) is not dispatch.get_engine(two)
    with one.app_context():
        first = echo.enqueue(1)
        assert dispatch.engine is dispatch.get_engine(one)
    with two.app_context():
        echo.enqueue(2)
        echo.enqueue(3)
        with pytest.raises(JobNotFoundError):  # the first job is in the other app's store
            dispatch.engine.get_job(first.id)

    for app, pending in ((one, 1), (two, 2)):
        counts = on_engine(dispatch.get_engine(app), lambda e: e.acount_jobs())
        assert counts.get(JobState.PENDING, 0) == pending


def test_outside_an_app_context_the_only_app_is_used(dispatch: Dispatch, make_app: MakeApp) -> None:
    with pytest.raises(RuntimeError, match="not initialized on any app"):
        dispatch.get_engine()
    app = make_app()
    assert dispatch.engine is dispatch.get_engine(app)
    make_app("other")
    with pytest.raises(RuntimeError, match="initialized on 2 apps and no app context"):
        dispatch.get_engine()
    with app.app_context():
        assert dispatch.engine is dispatch.get_engine(app)


def test_an_app_without_the_extension_is_named(dispatch: Dispatch, make_app: MakeApp) -> None:
    make_app()
    stranger = Flask("stranger")
    with pytest.raises(RuntimeError, match="not initialized on the Flask app 'stranger'"):
        dispatch.get_engine(stranger)
    with stranger.app_context(), pytest.raises(RuntimeError, match="'stranger'"):
        dispatch.get_engine()


def test_engine_options_reach_every_engine() -> None:
    retention = Retention(completed=timedelta(minutes=1))
    backoff = Constant(interval=0.5)
    dispatch = Dispatch(retention=retention, backoff=backoff)
    app = Flask("opts")
    app.config["DISPATCH_URL"] = "memory://"
    dispatch.init_app(app)
    assert dispatch.get_engine(app).retention is retention
    assert dispatch.get_engine(app).backoff is backoff
    dispatch.get_engine(app).close()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("url", "set by app.config['DISPATCH_URL']"),
        ("auto_migrate", "set by app.config['DISPATCH_AUTO_MIGRATE']"),
        ("concurrency", "unknown option 'concurrency'; options are backoff, hook_timeout"),
    ],
)
def test_an_unknown_option_is_refused(option: str, message: str) -> None:
    options: dict[str, Any] = {option: 1}
    with pytest.raises(TypeError, match=re.escape(message)):
        Dispatch(**options)


# -- configuration -------------------------------------------------------------------------------


def test_worker_settings_come_from_the_config(dispatch: Dispatch, make_app: MakeApp) -> None:
    app = make_app(
        DISPATCH_WORKER_QUEUES="emails, images",
        DISPATCH_WORKER_CONCURRENCY=3,
        DISPATCH_WORKER_LEASE_SECONDS=9,
        DISPATCH_WORKER_GRACE_PERIOD=0,
        DISPATCH_WORKER_POLL_INTERVAL=0.5,
        DISPATCH_WORKER_PREFETCH=2,
        DISPATCH_WORKER_HEARTBEAT_INTERVAL=1,
        DISPATCH_WORKER_TIMEOUT=5,
        DISPATCH_WORKER_LEAD=False,
        DISPATCH_AUTO_MIGRATE=False,
    )
    config = dispatch.get_config(app)
    assert config == DispatchConfig(
        url="memory://",
        auto_migrate=False,
        worker=WorkerSettings(
            queues=("emails", "images"),
            concurrency=3,
            lease_seconds=9.0,
            grace_period=0.0,
            poll_interval=0.5,
            prefetch=2,
            heartbeat_interval=1.0,
            worker_timeout=5.0,
            lead=False,
        ),
    )
    assert dispatch.get_engine(app).auto_migrate is False
    worker = dispatch.worker(app)
    assert worker.queues == ["emails", "images"]
    assert (worker.concurrency, worker.lease_seconds, worker.grace_period) == (3, 9.0, 0.0)
    assert (worker.prefetch, worker.heartbeat_interval, worker.worker_timeout) == (2, 1.0, 5.0)
    assert worker.lead is False
    assert dispatch.worker(app, concurrency=7).concurrency == 7


def test_queue_limits_from_the_config_win_over_code(
    on_engine: OnEngine, dispatch: Dispatch, make_app: MakeApp
) -> None:
    dispatch.queue("emails", concurrency=10)
    dispatch.queue("images", rate=2.0)
    app = make_app(DISPATCH_QUEUES={"emails": {"concurrency": 4, "per_tenant": True}})
    engine = dispatch.get_engine(app)

    async def limits(e: Engine) -> dict[str, Any]:
        await e.apply_schedules()
        return {q.name: q.config for q in await e.aqueues()}

    found = on_engine(engine, limits)
    assert found["emails"].concurrency == 4
    assert found["emails"].per_tenant is True
    assert found["images"].rate == 2.0


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("DISPATCH_URL", 5, "app.config['DISPATCH_URL'] must be a store URL"),
        ("DISPATCH_URL", "  ", "app.config['DISPATCH_URL'] must be a store URL"),
        ("DISPATCH_AUTO_MIGRATE", "yes", "app.config['DISPATCH_AUTO_MIGRATE'] must be True or"),
        (
            "DISPATCH_WORKER_CONCURRENCY",
            0,
            "['DISPATCH_WORKER_CONCURRENCY'] must be an integer >= 1",
        ),
        ("DISPATCH_WORKER_CONCURRENCY", "10", "must be an integer >= 1, got '10'"),
        ("DISPATCH_WORKER_CONCURRENCY", True, "must be an integer >= 1, got True"),
        ("DISPATCH_WORKER_PREFETCH", -1, "['DISPATCH_WORKER_PREFETCH'] must be an integer >= 0"),
        ("DISPATCH_WORKER_LEASE_SECONDS", 0, "must be a number of seconds > 0, got 0"),
        ("DISPATCH_WORKER_GRACE_PERIOD", -1, "['DISPATCH_WORKER_GRACE_PERIOD'] must be a number"),
        ("DISPATCH_WORKER_POLL_INTERVAL", float("nan"), "['DISPATCH_WORKER_POLL_INTERVAL']"),
        ("DISPATCH_WORKER_HEARTBEAT_INTERVAL", "2s", "['DISPATCH_WORKER_HEARTBEAT_INTERVAL']"),
        ("DISPATCH_WORKER_QUEUES", 5, "must be a list of queue names"),
        ("DISPATCH_WORKER_QUEUES", ["a", 1], "must be a list of queue names"),
        ("DISPATCH_WORKER_LEAD", 1, "['DISPATCH_WORKER_LEAD'] must be True or False"),
        ("DISPATCH_QUEUES", ["emails"], "['DISPATCH_QUEUES'] must be a dict of queue name"),
        ("DISPATCH_QUEUES", {"emails": 4}, "['DISPATCH_QUEUES']['emails'] must be a dict"),
        ("DISPATCH_QUEUES", {"emails": {"speed": 1}}, "has unknown limits ['speed']"),
        (
            "DISPATCH_QUEUES",
            {"emails": {"concurrency": 0}},
            "['DISPATCH_QUEUES']['emails']: queue 'emails': concurrency must be >= 1",
        ),
        ("DISPATCH_WORKER_CONCURENCY", 4, "did you mean DISPATCH_WORKER_CONCURRENCY?"),
        ("DISPATCH_BROKER", "x", "'DISPATCH_BROKER'] is not a Dispatch setting; known keys"),
    ],
)
def test_a_bad_config_value_is_refused_naming_the_key(
    dispatch: Dispatch, key: str, value: Any, message: str
) -> None:
    app = Flask("bad")
    app.config.update(DISPATCH_URL="memory://")
    app.config[key] = value
    with pytest.raises(ConfigurationError) as info:
        dispatch.init_app(app)
    assert message in str(info.value)
    # Nothing was registered: once the config is fixed, init_app works.
    assert "dispatch" not in app.extensions
    del app.config[key]
    dispatch.init_app(app)
    dispatch.get_engine(app).close()


def test_a_store_url_no_plugin_serves_is_refused(dispatch: Dispatch) -> None:
    app = Flask("bad")
    app.config["DISPATCH_URL"] = "nosuch://x"
    with pytest.raises(ConfigurationError, match="nosuch"):
        dispatch.init_app(app)
    assert "dispatch" not in app.extensions
