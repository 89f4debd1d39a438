"""What Dispatch cannot do the Celery way raises TypeError naming it, never ignored."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import dispatch_celery
from dispatch_celery import AsyncResult, Celery, Task, crontab


@pytest.fixture
def app() -> Celery:
    """Refusals happen before any store is used: one store is enough here."""
    return Celery("unsupported", broker="memory://")


@pytest.fixture
def add(app: Celery) -> Task[[int, int], int]:
    @app.task(name="tasks.add")
    def add(x: int, y: int) -> int:
        return x + y

    return add


APPLY_ASYNC_OPTIONS: list[tuple[str, Any]] = [
    ("exchange", "tasks"),
    ("exchange_type", "direct"),
    ("routing_key", "tasks.add"),
    ("link", "callback"),
    ("link_error", "errback"),
    ("chain", []),
    ("chord", "header"),
    ("group_id", "g1"),
    ("shadow", "other"),
    ("compression", "zlib"),
    ("retry_policy", {"max_retries": 3}),
    ("soft_time_limit", 10),
    ("serializer", "pickle"),
    ("mandatory", True),  # an option this list does not know
]


@pytest.mark.parametrize(("option", "value"), APPLY_ASYNC_OPTIONS)
def test_apply_async_options(add: Task[[int, int], int], option: str, value: Any) -> None:
    with pytest.raises(TypeError, match=f"apply_async option '{option}'.*dispatch_celery"):
        add.apply_async((1, 2), **{option: value})


@pytest.mark.parametrize(("option", "value"), APPLY_ASYNC_OPTIONS)
def test_send_task_options(app: Celery, option: str, value: Any) -> None:
    with pytest.raises(TypeError, match=f"send_task option '{option}'.*dispatch_celery"):
        app.send_task("tasks.add", (1, 2), **{option: value})


@pytest.mark.parametrize(("option", "value"), APPLY_ASYNC_OPTIONS)
def test_options_are_refused_in_eager_mode_too(
    app: Celery, add: Task[[int, int], int], option: str, value: Any
) -> None:
    app.conf.task_always_eager = True
    with pytest.raises(TypeError, match=f"option '{option}'"):
        add.apply_async((1, 2), **{option: value})


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("base", Task),
        ("rate_limit", "10/m"),
        ("soft_time_limit", 5),
        ("exchange", "x"),
        ("routing_key", "x"),
        ("serializer", "pickle"),
        ("throws", (KeyError,)),
        ("trail", False),
        ("send_events", True),
        ("reject_on_worker_lost", True),
    ],
)
def test_task_options(app: Celery, option: str, value: Any) -> None:
    with pytest.raises(TypeError, match=f"@app.task option '{option}'.*dispatch_celery"):

        @app.task(**{option: value})
        def noop() -> None: ...


def test_task_values_dispatch_cannot_honour(app: Celery) -> None:
    with pytest.raises(TypeError, match=r"max_retries=None \(retry forever\)"):

        @app.task(max_retries=None)
        def forever() -> None: ...

    with pytest.raises(TypeError, match="async function"):

        @app.task
        async def coroutine() -> None: ...


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("task_routes", {"tasks.add": {"queue": "math"}}),
        ("task_queues", ()),
        ("task_default_exchange", "tasks"),
        ("task_default_routing_key", "tasks"),
        ("task_default_rate_limit", "10/s"),
        ("task_annotations", {}),
        ("task_soft_time_limit", 10),
        ("task_serializer", "pickle"),
        ("result_serializer", "pickle"),
        ("accept_content", ["json", "pickle"]),
        ("result_backend", "redis://localhost"),
        ("worker_concurrency", 4),
        ("worker_prefetch_multiplier", 1),
        ("beat_scheduler", "django_celery_beat.schedulers:DatabaseScheduler"),
        ("task_publish_retry_policy", {}),
        ("enable_utc", False),
        ("task_protocol", 2),  # a Celery setting this adapter does not know
        ("CELERY_ALWAYS_EAGER", True),  # old upper-case name
    ],
)
def test_settings(app: Celery, setting: str, value: Any) -> None:
    with pytest.raises(TypeError, match=f"{setting}.*dispatch_celery"):
        app.conf[setting] = value
    with pytest.raises(TypeError, match=setting):
        app.conf.update({setting: value})
    with pytest.raises(TypeError, match=setting):
        Celery("other", set_as_current=False, **{setting: value})
    assert app.conf.get(setting) != value


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("backend", "rpc://"),
        ("task_cls", Task),
        ("loader", "default"),
        ("amqp", "celery.app.amqp:AMQP"),
        ("namespace", "CELERY"),
        ("autofinalize", False),
    ],
)
def test_app_arguments(argument: str, value: Any) -> None:
    with pytest.raises(TypeError, match=f"{argument}.*dispatch_celery"):
        Celery("proj", set_as_current=False, **{argument: value})


@pytest.mark.parametrize(
    "name", ["group", "chain", "chord", "signature", "chunks", "xmap", "xstarmap"]
)
def test_canvas_functions(name: str) -> None:
    canvas: Callable[..., Any] = getattr(dispatch_celery, name)
    with pytest.raises(TypeError, match=f"canvas '{name}' is not supported by dispatch_celery"):
        canvas()


@pytest.mark.parametrize("method", ["s", "si", "signature", "subtask", "map", "starmap", "chunks"])
def test_canvas_methods(add: Task[[int, int], int], method: str) -> None:
    with pytest.raises(TypeError, match=rf"Task.{method}\(\) is canvas"):
        getattr(add, method)(1, 2)


def test_other_celery_apis(app: Celery, add: Task[[int, int], int]) -> None:
    with pytest.raises(TypeError, match="add_periodic_task"):
        app.add_periodic_task(10.0, "add.s(1, 2)")
    with pytest.raises(TypeError, match="autodiscover_tasks"):
        app.autodiscover_tasks(["proj"])
    with pytest.raises(TypeError, match="dispatch worker"):
        app.worker_main(["worker"])
    with pytest.raises(TypeError, match="dispatch worker"):
        app.start()
    result = AsyncResult("job_x", app=app)
    with pytest.raises(TypeError, match="forget"):
        result.forget()
    with pytest.raises(TypeError, match="'callback'"):
        result.get(timeout=0, callback=print)
    with pytest.raises(TypeError, match="'signal'"):
        result.revoke(signal="SIGKILL")
    with pytest.raises(TypeError, match="'nowfun'"):
        crontab(nowfun=None)


def test_retry_arguments_a_retry_cannot_honour(app: Celery) -> None:
    @app.task(bind=True)
    def retrying(self: Any, option: str) -> None:
        raise self.retry(**{option: {"x": 1} if option != "throw" else False})

    for option in ("args", "kwargs", "throw", "exchange"):
        result = retrying.apply((option,))
        with pytest.raises(TypeError, match=f"Task.retry option '{option}'"):
            result.get()
