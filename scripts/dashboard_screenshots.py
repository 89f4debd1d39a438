"""Screenshots of the dashboard for the docs: docs/img/dashboard-*.png.

Runs the demo app (examples/demo_app.py) on a fresh SQLite file with a worker and the admin app
under uvicorn, feeds it jobs for a while so the throughput chart has a shape, then drives
headless Chromium (Debian's package, through Playwright) over every page.

    .venv/bin/python scripts/dashboard_screenshots.py [--seconds 120] [--out docs/img]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="how long to feed jobs")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=900)
    return parser.parse_args()


async def feed(engine: Any, demo: Any, seconds: float) -> None:
    """Bursts of jobs every few seconds: mostly successes, a flaky charge, a failing webhook."""
    rng = random.Random(7)
    deadline = time.monotonic() + seconds
    tick = 0
    while time.monotonic() < deadline:
        tick += 1
        size = 20 + int(15 * (1 + (tick % 7) / 3)) + rng.randrange(10)
        await demo.send_welcome.aenqueue_many(
            [
                demo.Welcome(user_id=tick * 100 + i, email=f"user{tick}-{i}@example.com")
                for i in range(size)
            ]
        )
        await demo.make_thumbnail.aenqueue_many([f"/img/{tick}-{i}.png" for i in range(size // 2)])
        if tick % 3 == 0:
            await demo.charge_card.aenqueue(demo.Charge(order_id=tick, cents=1999))
        for _ in range(rng.randrange(0, 3)):
            await demo.call_webhook.aenqueue(f"https://hooks.example.com/orders/{tick}")
        await asyncio.sleep(5)
        print(f"  fed {tick} bursts", end="\r", flush=True)
    print()


async def main(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="dispatch-shots-"))
    os.environ["DISPATCH_URL"] = f"sqlite:///{workdir / 'demo.db'}"
    sys.path.insert(0, str(ROOT))

    import uvicorn
    from playwright.async_api import async_playwright
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from dispatch_plugins.admin.app import admin_app
    from dispatch_plugins.admin.auth import Token
    from examples import demo_app as demo

    engine = demo.engine
    secret = secrets.token_urlsafe(24)
    app = Starlette(
        routes=[
            Mount(
                "/dispatch",
                app=admin_app(
                    engine, tokens=[Token(name="docs", secret=secret, scopes=frozenset({"admin"}))]
                ),
            )
        ]
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/dispatch/"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ws="none"))
    await engine.aopen()
    worker = engine.worker(concurrency=10, poll_interval=0.2)
    tasks = [
        asyncio.create_task(server.serve(sockets=[sock])),
        asyncio.create_task(worker.run()),
    ]
    try:
        print(f"dashboard at {url}, store {workdir / 'demo.db'}")
        print(f"feeding jobs for {args.seconds:.0f} s")
        # Runs of the onboarding workflow: three get their activation event, one (started at
        # the end) is still waiting for it in the screenshots.
        runs = [
            await demo.onboard.astart(demo.Welcome(user_id=i, email=f"new{i}@example.com"))
            for i in range(3)
        ]
        charge = await demo.charge_card.aenqueue(demo.Charge(order_id=1, cents=4999))
        webhook = await demo.call_webhook.aenqueue("https://hooks.example.com/orders/1")
        await feed(engine, demo, args.seconds / 2)
        for run in runs:
            await engine.asend_event("activated", {"at": "2026-11-28T09:00:00Z"}, run_id=run.id)
        await feed(engine, demo, args.seconds / 2)
        await demo.onboard.astart(demo.Welcome(user_id=99, email="late@example.com"))
        # Scheduled for later: a queue depth to show.
        await demo.send_welcome.aenqueue_many(
            [demo.Welcome(user_id=9000 + i, email=f"later{i}@example.com") for i in range(25)],
            delay=3600,
        )
        await asyncio.sleep(3)

        pages = {
            "overview": "/overview?window=300",
            "jobs": "/jobs",
            "job": f"/jobs/{charge.id}",
            "job-failed": f"/jobs/{webhook.id}",
            "workflows": "/workflows",
            "run": f"/runs/{runs[0].id}",
            "cron": "/cron",
            "dlq": "/dlq",
            "workers": "/workers",
        }
        args.out.mkdir(parents=True, exist_ok=True)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS
            )
            context = await browser.new_context(
                viewport={"width": args.width, "height": args.height}, timezone_id="UTC"
            )
            page = await context.new_page()
            await page.goto(f"{url}#token={secret}")
            await page.wait_for_selector("#shell:not([hidden])")
            for name, route in pages.items():
                await page.goto(f"{url}#{route}")
                await page.wait_for_selector(".page-content:not([hidden])")
                await page.wait_for_load_state("networkidle")
                path = args.out / f"dashboard-{name}.png"
                await page.screenshot(path=str(path), full_page=True)
                print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
            await browser.close()
    finally:
        server.should_exit = True
        worker.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await engine.aclose()
    return 0


if __name__ == "__main__":
    arguments = parse_args()
    if not Path(arguments.chromium).exists():
        sys.exit(f"Chromium not found at {arguments.chromium} (apt install chromium)")
    sys.exit(asyncio.run(main(arguments)))
