"""A module that fails while being imported, for the CLI's import-error test."""

from __future__ import annotations

raise RuntimeError("cliapp_broken refuses to load")
