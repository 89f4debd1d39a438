"""Flask extension for Dispatch: configure from app.config, enqueue from views, run jobs in the app context, flask dispatch commands."""

from __future__ import annotations

__all__: list[str] = []
