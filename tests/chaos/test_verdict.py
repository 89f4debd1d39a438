"""The chaos suite's verdict on made-up runs: it must fail every run that lost, doubled or
cannot explain something, and only those."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dispatch_core import Job, JobState

from ._harness import (
    AOF_ALWAYS,
    IN_FLIGHT,
    POSTGRES_ASYNC_COMMIT,
    RESCUE_LIMIT,
    Durability,
    Findings,
    Kill,
    Outage,
    Plan,
    analyse,
    tick_time,
)
from .chaos_app import TICK, WORK, Execution

pytestmark = pytest.mark.chaos

T0 = 1_000_000.0  # a time.time() value
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def job(
    job_id: str,
    *,
    attempt: int = 1,
    state: JobState = JobState.COMPLETED,
    name: str = WORK,
    key: str | None = None,
) -> Job:
    return Job(
        id=job_id,
        name=name,
        queue="chaos",
        payload=0,
        state=state,
        priority=0,
        attempt=attempt,
        max_attempts=51,
        timeout=300.0,
        run_at=EPOCH,
        created_at=EPOCH,
        updated_at=EPOCH,
        unique_key=key,
    )


def run(
    job_id: str,
    attempt: int,
    *,
    pid: int = 100,
    start: float = 0.0,
    end: float | None = 0.2,
    kind: str = "work",
    tick: str | None = None,
) -> Execution:
    finished = None if end is None else T0 + end
    return Execution(
        f"{job_id}-{attempt}-{pid}-{start}", job_id, kind, tick, attempt, "wkr_x", pid,
        T0 + start, finished,
    )  # fmt: skip


def tick_key(second: int) -> str:
    stamp = (EPOCH + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"cron:{TICK}:{stamp}"


def verdict(
    jobs: list[Job],
    executions: list[Execution],
    *,
    expected: set[str] | None = None,
    kills: list[Kill] | None = None,
    outages: list[Outage] | None = None,
    dead_letters: int = 0,
    durability: Durability = POSTGRES_ASYNC_COMMIT,
) -> Findings:
    ticks = [job(f"t{s}", name=TICK, key=tick_key(s)) for s in (0, 1, 2)]
    tick_runs = [run(f"t{s}", 1, start=s, kind="tick", tick=tick_key(s)) for s in (0, 1, 2)]
    return analyse(
        expected={j.id for j in jobs if j.name == WORK} if expected is None else expected,
        jobs=jobs + ticks,
        executions=executions + tick_runs,
        kills=kills or [],
        outages=outages or [],
        dead_letters=dead_letters,
        durability=durability,
    )


def test_a_clean_run_passes() -> None:
    f = verdict([job("a"), job("b")], [run("a", 1), run("b", 1, pid=101)])
    assert f.problems == [], f.problems
    assert (f.jobs, f.completed, f.executions, sum(f.extras.values())) == (2, 2, 5, 0)
    assert (f.ticks_fired, f.ticks_span, f.longest_tick_gap) == (3, 3, 1)


def test_an_execution_killed_mid_flight_is_explained_and_its_rescue_timed() -> None:
    kill = Kill(at=T0 + 1.0, pid=100, worker_id="wkr_a", leader=True)
    f = verdict(
        [job("a", attempt=2)],
        [run("a", 1, pid=100, start=0.9, end=None), run("a", 2, pid=101, start=9.0)],
        kills=[kill],
    )
    assert f.problems == [], f.problems
    assert f.extras == {"killed": 1}
    assert f.rescue_times(across=False) == [pytest.approx(8.0)]


def test_an_attempt_finished_but_not_yet_recorded_when_killed_is_explained() -> None:
    kill = Kill(at=T0 + 1.0, pid=100, worker_id="wkr_a", leader=False)
    f = verdict(
        [job("a", attempt=2)],
        [run("a", 1, pid=100, start=0.5, end=0.8), run("a", 2, pid=101, start=9.0)],
        kills=[kill, Kill(at=T0 + 2, pid=7, worker_id=None, leader=True)],
    )
    assert f.problems == [], f.problems
    assert f.extras == {"killed": 1}


def test_an_extra_execution_nothing_explains_fails_the_run() -> None:
    f = verdict([job("a", attempt=2)], [run("a", 1, pid=100), run("a", 2, pid=101, start=3)])
    assert f.extras == {"unexplained": 1}
    assert any("neither killed nor cut short" in p for p in f.problems)


def test_an_execution_cut_short_by_the_database_restart_is_explained() -> None:
    outage = Outage(down_at=T0 + 1.0, up_at=T0 + 4.0)
    f = verdict(
        [job("a", attempt=2), job("b", attempt=2)],
        [
            run("a", 1, start=0.9, end=4.5),  # its heartbeats stalled while the server was down
            run("a", 2, pid=101, start=12),
            run("b", 1, start=0.2, end=0.4),  # completed just before a crash lost the commit
            run("b", 2, pid=101, start=12),
        ],
        outages=[outage],
    )
    assert f.problems == [], f.problems
    assert f.extras == {"server restart": 2}


def test_an_attempt_whose_claim_the_crash_lost_runs_again_under_its_number() -> None:
    outage = Outage(down_at=T0 + 5.0, up_at=T0 + 8.0)
    runs = [run("a", 1, start=4.9, end=8.5), run("a", 1, pid=101, start=8.3, end=8.45)]
    f = verdict([job("a")], runs, outages=[outage])
    assert f.problems == [], f.problems
    assert f.extras == {"crash lost the claim": 1}


def test_a_server_that_keeps_acknowledged_writes_never_loses_a_claim() -> None:
    # The same attempt twice across the crash: PostgreSQL (async commit) may have lost the
    # claim; Redis with appendfsync always acknowledged it durably, so it is a fault.
    outage = Outage(down_at=T0 + 5.0, up_at=T0 + 8.0)
    runs = [run("a", 1, start=4.9, end=8.5), run("a", 1, pid=101, start=8.3, end=8.45)]
    f = verdict([job("a")], runs, outages=[outage], durability=AOF_ALWAYS)
    assert f.extras == {"unexplained": 1}
    assert any("attempts ran twice" in p and "appendfsync always" in p for p in f.problems)


def test_a_server_that_keeps_acknowledged_writes_allows_only_outcomes_in_flight() -> None:
    outage = Outage(down_at=T0 + 5.0, up_at=T0 + 8.0)
    jobs = [job("a", attempt=2), job("b", attempt=2)]
    runs = [
        run("a", 1, start=4.5, end=6.0),  # ended while the server was down
        run("a", 2, pid=101, start=20),
        run("b", 1, start=4.5, end=5.0 - IN_FLIGHT / 2),  # its outcome still on its way
        run("b", 2, pid=101, start=20),
    ]
    f = verdict(jobs, runs, outages=[outage], durability=AOF_ALWAYS)
    assert f.problems == [], f.problems
    assert f.extras == {"server restart": 2}
    # Finished 1.5 s before the crash: PostgreSQL may have lost that commit, Redis may not.
    acknowledged = [run("a", 1, start=3.0, end=3.5), run("a", 2, pid=101, start=20)]
    f = verdict([job("a", attempt=2)], acknowledged, outages=[outage])
    assert f.extras == {"server restart": 1}
    f = verdict([job("a", attempt=2)], acknowledged, outages=[outage], durability=AOF_ALWAYS)
    assert f.extras == {"unexplained": 1}
    assert any("neither killed nor cut short" in p for p in f.problems)


def test_a_live_worker_s_jobs_rescued_after_the_restart_fail_the_run() -> None:
    # Started and finished after the server was back, on a worker nobody killed: rescued
    # from a live worker (declared dead while its heartbeats were catching up).
    outage = Outage(down_at=T0 + 1.0, up_at=T0 + 4.0)
    runs = [run("a", 1, start=7.0, end=7.2), run("a", 2, pid=101, start=9.0)]
    f = verdict([job("a", attempt=2)], runs, outages=[outage])
    assert f.extras == {"unexplained": 1}
    assert any("neither killed nor cut short" in p for p in f.problems)


def test_an_execution_long_before_the_restart_is_not_explained_by_it() -> None:
    outage = Outage(down_at=T0 + 10.0, up_at=T0 + 13.0)
    f = verdict(
        [job("a", attempt=2)],
        [run("a", 1, start=1, end=1.2), run("a", 2, pid=101, start=20)],
        outages=[outage],
    )
    assert f.extras == {"unexplained": 1}


def test_lost_failed_and_unfinished_jobs_fail_the_run() -> None:
    f = verdict(
        [job("a"), job("b", state=JobState.FAILED), job("c", state=JobState.RUNNING)],
        [run("a", 1), run("b", 1), run("c", 1, end=None)],
        expected={"a", "b", "c", "lost"},
        dead_letters=1,
    )
    text = "\n".join(f.problems)
    assert "1 jobs lost" in text
    assert "2 jobs not completed" in text
    assert "1 dead-letter entries" in text
    assert f.completed == 1


def test_an_attempt_run_twice_fails_the_run() -> None:
    f = verdict([job("a")], [run("a", 1, pid=100), run("a", 1, pid=101, start=1)])
    assert any("attempts ran twice" in p for p in f.problems)


def test_a_slow_rescue_fails_the_run() -> None:
    kill = Kill(at=T0, pid=100, worker_id="wkr_a", leader=True)
    late = RESCUE_LIMIT + 1
    f = verdict(
        [job("a", attempt=2)],
        [run("a", 1, pid=100, start=-0.1, end=None), run("a", 2, pid=101, start=late)],
        kills=[kill],
    )
    assert any("ran again only after" in p for p in f.problems)


def test_a_rescue_held_up_by_the_database_restart_is_timed_from_its_return() -> None:
    kill = Kill(at=T0, pid=100, worker_id="wkr_a", leader=True)
    outage = Outage(down_at=T0 + 3, up_at=T0 + 6)
    runs = [run("a", 1, pid=100, start=-0.1, end=None), run("a", 2, pid=101, start=18)]
    f = verdict([job("a", attempt=2)], runs, kills=[kill], outages=[outage])
    assert f.problems == [], f.problems
    assert f.rescue_times(across=True) == [pytest.approx(18)]
    assert f.rescue_times(across=False) == []
    late = [run("a", 1, pid=100, start=-0.1, end=None), run("a", 2, pid=101, start=24)]
    f = verdict([job("a", attempt=2)], late, kills=[kill], outages=[outage])
    assert any("held up by the database restart" in p for p in f.problems)


def test_a_rescue_whose_rescuer_is_killed_starts_over_from_that_kill() -> None:
    """The leader that should rescue the jobs is killed before it does: its successor starts
    over (lease expiry, then a worker timeout), so the limit counts from that second kill; a
    database restart in the way of the new clock holds it up as usual."""
    first = Kill(at=T0, pid=100, worker_id="wkr_a", leader=True)
    rescuer = Kill(at=T0 + 7, pid=101, worker_id="wkr_b", leader=True)
    runs = [
        run("a", 1, pid=100, start=-0.1, end=None),
        run("b", 1, pid=101, start=6.5, end=None),
        run("a", 2, pid=102, start=20),
        run("b", 2, pid=102, start=20),
    ]
    jobs = [job("a", attempt=2), job("b", attempt=2)]
    f = verdict(jobs, runs, kills=[first, rescuer])
    assert f.problems == [], f.problems
    late = [*runs[:2], run("a", 2, pid=102, start=23), run("b", 2, pid=102, start=20)]
    f = verdict(jobs, late, kills=[first, rescuer])
    assert any("wkr_a" in p and "ran again only after 23.0s" in p for p in f.problems)
    # The cascade seen in CI: then a database restart in the way of the new clock.
    outage = Outage(down_at=T0 + 11.5, up_at=T0 + 14)
    held = [*runs[:2], run("a", 2, pid=102, start=22), run("b", 2, pid=102, start=22)]
    f = verdict(jobs, held, kills=[first, rescuer], outages=[outage])
    assert f.problems == [], f.problems


def test_a_run_without_a_leader_kill_fails() -> None:
    f = verdict([job("a")], [run("a", 1)], kills=[Kill(at=T0, pid=5, worker_id=None, leader=False)])
    assert any("leader was never killed" in p for p in f.problems)


def test_cron_ticks_collapsed_by_a_leader_change_are_counted() -> None:
    ticks = [job(f"c{s}", name=TICK, key=tick_key(s)) for s in (10, 11, 17, 18)]
    runs = [run(f"c{s}", 1, start=s, kind="tick", tick=tick_key(s)) for s in (10, 11, 17, 18)]
    f = verdict(ticks, runs)
    assert f.problems == [], f.problems
    assert (f.ticks_fired, f.ticks_span, f.longest_tick_gap) == (7, 19, 8)  # 2 -> 10


def test_a_tick_run_as_two_jobs_fails_the_run() -> None:
    twin = job("t1-bis", name=TICK, key=tick_key(40))
    f = verdict([twin], [run("t1-bis", 1, start=3, kind="tick", tick=tick_key(1))])
    assert any("cron ticks run as several jobs" in p for p in f.problems)


def test_tick_time_reads_the_unique_key() -> None:
    assert tick_time(tick_key(3)) == datetime(2026, 1, 1, 0, 0, 3)


def test_the_plan_is_a_function_of_the_seed() -> None:
    a, b = Plan.draw(7, workers=4), Plan.draw(7, workers=4)
    assert a == b
    assert a != Plan.draw(8, workers=4)
    for seed in range(50):
        p = Plan.draw(seed, workers=4)
        assert 4 <= len(p.kill_offsets) <= 8
        assert 5 <= len(p.kill_offsets) <= 8
        assert p.leader_kill in (1, 2)
        assert p.kill_offsets[3] < p.restart_at < p.kill_offsets[4]
        assert all(0 <= s < 4 for s in p.victim_slots)
