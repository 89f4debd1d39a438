"""``make demo``: enqueue a batch of jobs into SQLite, run a worker, show progress, summarise.

The worker registers itself, becomes the leader and fires the demo's cron entry. Exits 0 when
every job ended where it should (completed, or dead-lettered for the one job that always
fails) and the cron entry fired.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

#: The same file as ``examples.demo_app.DEMO_DB`` (imported only once DISPATCH_URL is set).
DB = pathlib.Path(os.environ.get("DEMO_DIR") or HERE.parent / ".demo") / "demo.db"


def fresh_db() -> None:
    DB.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        pathlib.Path(f"{DB}{suffix}").unlink(missing_ok=True)
    os.environ["DISPATCH_URL"] = f"sqlite:///{DB}"


async def main() -> int:
    fresh_db()
    from dispatch_core import JobState, PayloadError
    from examples.demo_app import (
        Charge,
        Welcome,
        call_webhook,
        charge_card,
        engine,
        make_thumbnail,
        onboard,
        report,
        send_welcome,
    )

    print(f"Dispatch demo: store {engine.url}")
    welcomes = await send_welcome.aenqueue_many(
        [Welcome(user_id=i, email=f"user{i}@example.com") for i in range(300)]
    )
    thumbs = await make_thumbnail.aenqueue_many([f"/img/{i}.png" for i in range(100)])
    charge = await charge_card.aenqueue(Charge(order_id=42, cents=1999))
    webhook = await call_webhook.aenqueue("https://example.com/hook")
    total = len(welcomes) + len(thumbs) + 2
    print(
        f"enqueued {total} jobs: {len(welcomes)} welcome e-mails, {len(thumbs)} thumbnails, "
        "1 flaky card charge, 1 webhook that always fails"
    )
    try:
        await send_welcome.aenqueue({"user_id": "seven"})
    except PayloadError as exc:
        print(f"refused at enqueue, nothing written: {exc}")

    flow = await onboard.astart(Welcome(user_id=1, email="ada@example.com"))
    print(f"started workflow run {flow.id} (demo.onboard)")

    worker = engine.worker(concurrency=10, poll_interval=0.2)
    t0 = time.perf_counter()
    run = asyncio.create_task(worker.run())
    last: tuple[int, ...] = ()
    while True:
        counts = await engine.acount_jobs()
        # Leave out the cron's jobs and the jobs that drive the workflow.
        cron_counts = await engine.acount_jobs(queue="maintenance")
        flow_counts = await engine.acount_jobs(queue="workflows")
        completed = (
            counts.get(JobState.COMPLETED, 0)
            - cron_counts.get(JobState.COMPLETED, 0)
            - flow_counts.get(JobState.COMPLETED, 0)
        )
        dead = counts.get(JobState.FAILED, 0)
        done = completed + dead
        now = (done, worker.stats.retried)
        if now != last:
            print(
                f"  [{time.perf_counter() - t0:5.2f}s] {done}/{total} finished  "
                f"completed={completed} retried={worker.stats.retried} dead-lettered={dead}",
                flush=True,
            )
            last = now
        if done == total:
            break
        if time.perf_counter() - t0 > 60:
            print("demo: jobs did not finish within 60 s", file=sys.stderr)
            worker.stop(grace=0)
            await run
            return 1
        await asyncio.sleep(0.1)
    elapsed = time.perf_counter() - t0
    leader = await engine.aleader()
    # The workflow sleeps a second, then waits for its "activated" event: send it.
    while (await flow.aget()).state.value != "waiting":
        if time.perf_counter() - t0 > 30:
            break
        await asyncio.sleep(0.1)
    await engine.asend_event("activated", {"at": "2026-11-27T12:00:00Z"}, run_id=flow.id)
    flow_output = await flow.aresult(timeout=30)
    timeline = await flow.atimeline()
    # The cron entry fires every two seconds: wait for two ticks to have run.
    while time.perf_counter() - t0 < 30:
        reports = await engine.alist_jobs(name=report.name, state=JobState.COMPLETED)
        if len(reports) >= 2:
            break
        await asyncio.sleep(0.2)
    workers = await engine.aworkers()
    worker.stop()
    stats = await run
    drivers = len(await engine.alist_jobs(queue="workflows", state=JobState.COMPLETED))
    ours = stats.completed - len(reports) - drivers

    charged = await engine.aget_job(charge.id)
    failed = await engine.aget_job(webhook.id)
    dlq = await engine.alist_dlq()
    print()
    print(
        f"summary: {ours} completed, {stats.retried} retries, "
        f"{stats.failed} dead-lettered in {elapsed:.2f}s"
    )
    print(
        f"  flaky charge: {charged.state.value} after {charged.attempt} attempts"
        f" -> {charged.result!r}"
    )
    print(f"  webhook: {failed.state.value} after {failed.attempt} attempts")
    for entry in dlq:
        print(f"  DLQ {entry.id}: {entry.name} - {entry.error.splitlines()[0]}")
    print(f"  workflow {flow.id}: {flow_output}")
    for record in timeline:
        print(f"    #{record.seq} {record.kind.value:<6} {record.name:<9} {record.state.value}")
    ticks = sorted(j.headers.get("dispatch-cron-tick", "?") for j in reports)
    print(f"  cron demo.report (*/2 * * * * *): fired {len(reports)} times, ticks {ticks}")
    print(
        f"  cluster: {len(workers)} worker registered ({workers[0].id} on {workers[0].hostname}),"
        f" leader {leader}"
    )
    print()
    # The `dispatch` of the venv running this demo (.venv-demo under `make demo`).
    cli = pathlib.Path(sys.executable).parent / "dispatch"
    with contextlib.suppress(ValueError):
        cli = cli.relative_to(pathlib.Path.cwd())
    print("inspect it yourself:")
    print(f"  {cli} jobs ls --url sqlite:///{DB} --state failed")
    print(f"  {cli} dlq ls --url sqlite:///{DB}")
    print(f"  {cli} workers --all --url sqlite:///{DB}")
    print(f"  {cli} cron ls --url sqlite:///{DB}")
    print(f"  {cli} queues --url sqlite:///{DB}")
    print(f"  {cli} workflows show {flow.id} --url sqlite:///{DB}")
    print("  make serve   # the web dashboard on this database, with a worker")
    await engine.aclose()
    ok = (
        charged.state is JobState.COMPLETED
        and charged.attempt == 3
        and failed.state is JobState.FAILED
        and len(dlq) == 1
        and ours == total - 1
        and len(reports) >= 2
        and [r.name for r in timeline] == ["welcome", "cool-off", "activated", "tips"]
        and leader == worker.id
    )
    if not ok:
        print("demo: unexpected outcome", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
