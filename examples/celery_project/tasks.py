"""A small Celery project, written as Celery's "First steps" tutorial writes it.

Only the import lines differ from the Celery version (``celery`` -> ``dispatch_celery``).
See README.md to run it.
"""

from __future__ import annotations

from dispatch_celery import Celery
from dispatch_celery.schedules import crontab

app = Celery("tasks", broker="pyamqp://guest@localhost//")

app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    timezone="UTC",
    enable_utc=True,
)

app.conf.beat_schedule = {
    "add-every-30-seconds": {
        "task": "tasks.add",
        "schedule": 30.0,
        "args": (16, 16),
    },
    "add-every-monday-morning": {
        "task": "tasks.add",
        "schedule": crontab(hour=7, minute=30, day_of_week=1),
        "args": (16, 16),
    },
}


@app.task
def add(x, y):
    return x + y


@app.task
def mul(x, y):
    return x * y


@app.task
def xsum(numbers):
    return sum(numbers)


@app.task(bind=True, max_retries=3, default_retry_delay=1)
def fetch(self, url):
    """Fails twice, like a flaky upstream, then succeeds."""
    if self.request.retries < 2:
        raise self.retry(exc=ConnectionError(f"{url} is unreachable"))
    return f"fetched {url} after {self.request.retries} retries"
