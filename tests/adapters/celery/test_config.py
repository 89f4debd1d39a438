"""Where jobs are stored (broker, DISPATCH_URL), app.conf, config_from_object."""

from __future__ import annotations

import pathlib
import sys
import types
from datetime import timedelta

import pytest

from dispatch_celery import Celery, current_app
from dispatch_core import ConfigurationError, Engine


def test_broker_is_the_dispatch_store_url(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("dispatch_plugins.sqlite")
    app = Celery("proj", broker=f"sqlite:///{tmp_path}/proj.db")
    try:
        assert app.engine.url == f"sqlite:///{tmp_path}/proj.db"
        assert app.conf.broker_url == f"sqlite:///{tmp_path}/proj.db"
    finally:
        app.close()


def test_dispatch_url_overrides_the_broker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.setenv("DISPATCH_URL", "memory://")
    app = Celery("proj", broker="pyamqp://guest@localhost//")
    assert app.engine.url == "memory://"


def test_a_celery_transport_without_dispatch_url_is_an_error() -> None:
    app = Celery("proj", broker="pyamqp://guest@localhost//")  # fine until the store is needed

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(ConfigurationError, match="'pyamqp://guest@localhost//' is not a Dispatch"):
        add.delay(1, 2)
    with pytest.raises(ConfigurationError, match="set DISPATCH_URL"):
        app.engine  # noqa: B018


def test_no_broker_uses_dispatchs_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    pytest.importorskip("dispatch_plugins.sqlite")
    monkeypatch.chdir(tmp_path)
    app = Celery("proj")
    assert app.engine.url == "sqlite:///dispatch.db"
    app.close()


def test_a_given_engine_is_used_as_is() -> None:
    engine = Engine("memory://")
    app = Celery("proj", engine=engine)

    @app.task(name="proj.add")
    def add(x: int, y: int) -> int:
        return x + y

    assert app.engine is engine
    assert "proj.add" in engine.jobs
    with pytest.raises(TypeError, match="not both"):
        Celery("proj", engine=engine, broker="memory://")


def test_engine_settings_cannot_change_once_it_is_built() -> None:
    app = Celery("proj", broker="memory://", task_default_queue="work")

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    assert app.engine.jobs[add.name].queue == "work"
    with pytest.raises(RuntimeError, match="broker_url cannot change"):
        app.conf.broker_url = "memory://other"
    with pytest.raises(RuntimeError, match="task_default_queue cannot change"):
        app.conf.task_default_queue = "other"
    app.conf.task_always_eager = True  # not an engine setting: fine


def test_result_expires_is_the_engines_retention() -> None:
    app = Celery("proj", broker="memory://", result_expires=3600)
    retention = app.engine.retention
    assert retention is not None
    assert retention.completed == retention.failed == timedelta(hours=1)
    kept = Celery("proj", broker="memory://", result_expires=None)
    assert kept.engine.retention is not None
    assert kept.engine.retention.completed is None


def test_conf_reads_by_attribute_and_key() -> None:
    app = Celery("proj", broker="memory://")
    assert app.conf.task_always_eager is False
    assert app.conf["task_default_queue"] == "celery"
    app.conf.update(task_always_eager=True, timezone="UTC")
    assert app.conf["task_always_eager"] is True
    app.conf.my_own_setting = 3  # names outside Celery's are the app's own
    assert app.conf.my_own_setting == 3
    with pytest.raises(AttributeError, match="no setting 'missing'"):
        app.conf.missing  # noqa: B018
    del app.conf["task_always_eager"]  # back to the default
    assert app.conf.task_always_eager is False


def test_config_from_object(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("celeryconfig_for_tests")
    module.broker_url = "memory://"  # type: ignore[attr-defined]
    module.task_always_eager = True  # type: ignore[attr-defined]
    module.timedelta = timedelta  # type: ignore[attr-defined]  # an import: not a setting
    monkeypatch.setitem(sys.modules, module.__name__, module)

    app = Celery("proj")
    app.config_from_object("celeryconfig_for_tests")
    assert app.conf.broker_url == "memory://"
    assert app.conf.task_always_eager is True
    assert "timedelta" not in app.conf

    class Settings:
        CELERY_TASK_DEFAULT_QUEUE = "django"
        CELERY_TIMEZONE = "Europe/Paris"
        DATABASES = "sqlite"

    django_style = Celery("proj")
    django_style.config_from_object(Settings, namespace="CELERY")
    assert django_style.conf.task_default_queue == "django"
    assert django_style.conf.timezone == "Europe/Paris"
    assert "databases" not in django_style.conf

    from_dict = Celery("proj", config_source={"task_eager_propagates": True})
    assert from_dict.conf.task_eager_propagates is True
    with pytest.raises(TypeError, match="task_routes"):
        from_dict.config_from_object({"task_routes": {}})
    from_dict.config_from_object("no_such_module_here", silent=True)
    with pytest.raises(ImportError):
        from_dict.config_from_object("no_such_module_here")


def test_include_modules_are_imported_when_the_engine_is_built(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    (tmp_path / "included_tasks_for_tests.py").write_text(
        "from dispatch_celery import current_app\n"
        "app = current_app()\n"
        "@app.task(name='included.hello')\n"
        "def hello(name):\n"
        "    return 'hello ' + name\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "included_tasks_for_tests", raising=False)
    app = Celery("proj", broker="memory://", include=["included_tasks_for_tests"])
    assert "included.hello" not in app.tasks
    assert "included.hello" in app.engine.jobs


def test_current_app_is_the_last_one_created() -> None:
    first = Celery("first", broker="memory://")
    assert current_app() is first
    Celery("second", broker="memory://", set_as_current=False)
    assert current_app() is first
    second = Celery("third", broker="memory://")
    assert current_app() is second
    first.set_default()
    assert current_app() is first
