"""``python -m dispatch_core.cli``: the same as the ``dispatch`` command."""

from __future__ import annotations

from dispatch_core.cli import main

main()
