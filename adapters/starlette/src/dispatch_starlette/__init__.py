"""Starlette and FastAPI integration for Dispatch: a lifespan that opens the engine and can run a worker in the app process, and a FastAPI dependency."""

from __future__ import annotations

__all__: list[str] = []
