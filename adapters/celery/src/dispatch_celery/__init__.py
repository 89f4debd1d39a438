"""A Celery-style API over Dispatch: @app.task, delay, apply_async, AsyncResult, retry and beat_schedule, for projects leaving Celery."""

from __future__ import annotations

__all__: list[str] = []
