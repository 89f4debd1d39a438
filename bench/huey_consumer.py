"""The Huey consumer child process (its own module so task names match the producer's).

::

    python -m bench.huey_consumer drain --db huey.db --synchronous default --expect 20000 \
        --workers 10 --out result.json
    python -m bench.huey_consumer latency ... --ready ready.flag

The consumer is ``huey.create_consumer(workers=N, worker_type="thread")`` with Huey's default
polling. ``drain`` counts completions in the task and reports the seconds from
``consumer.start()`` to the last one; ``latency`` records each job's pickup latency.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from pathlib import Path

from bench.huey_side import make_huey
from bench.latency import Recorder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.huey_consumer")
    parser.add_argument("command", choices=["drain", "latency"])
    parser.add_argument("--db", required=True)
    parser.add_argument("--synchronous", default="default")
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--out", required=True)
    parser.add_argument("--ready")
    parser.add_argument("--deadline", type=float, default=120.0)
    args = parser.parse_args(argv)

    recorder = Recorder(expect=args.expect, ready_path=Path(args.ready) if args.ready else None)
    tasks = make_huey(Path(args.db), synchronous=args.synchronous, recorder=recorder)
    consumer = tasks.huey.create_consumer(workers=args.workers, worker_type="thread")
    stop = threading.Event()
    recorder.on_done = stop.set

    t0 = time.perf_counter()
    consumer.start()
    # consumer.start() installs handlers that only flag the signal for consumer.run(), which we
    # do not call; take SIGINT/SIGTERM back so the parent can always stop us.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait(args.deadline)
    finally:
        consumer.stop(graceful=True)
    seconds = recorder.done_at - t0 if recorder.done_at else 0.0
    recorder.dump(Path(args.out), seconds=seconds)
    got = recorder.count if args.command == "drain" else len(recorder.samples_ns)
    if got != args.expect:
        print(f"consumer stopped with {got}/{args.expect} jobs", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
