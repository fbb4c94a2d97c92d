"""The fleet engine on a real redis-server: replicas admit, workers run, everything shared."""

from __future__ import annotations

import time

import pytest
from engine_fakes import WAIT, FakePipeline, png_for

from glide_api.engine import EngineConfig, Succeeded
from glide_api.engine.fleet import Fleet
from glide_api.errors import QueueFull
from glide_api.pipeline.params import GenerationRequest

CAPABILITIES = {"text2im": {"sizes": [64, 256], "default_size": 256, "diffusion_steps": 1000, "models": {}}}


def request(prompt: str = "a corgi", *, seed: int = 1, **settings) -> GenerationRequest:
    return GenerationRequest.create(prompt, size=64, seed=seed, **settings)


@pytest.fixture
def fleet(redis_server):
    made: list[Fleet] = []
    pipelines: list[FakePipeline] = []

    def replica(**config) -> Fleet:
        made.append(Fleet.replica(redis_server.url, EngineConfig(**config)))
        return made[-1]

    def worker(
        name: str,
        *,
        claim_timeout: float = 30.0,
        max_attempts: int = 3,
        pipeline: FakePipeline | None = None,
        **config,
    ) -> Fleet:
        pipeline = pipeline or FakePipeline()
        pipelines.append(pipeline)
        made.append(
            Fleet.worker(
                redis_server.url,
                pipeline,
                EngineConfig(**config),
                worker_id=name,
                claim_timeout=claim_timeout,
                max_attempts=max_attempts,
                describe=lambda: {"capabilities": CAPABILITIES},
            )
        )
        made[-1].start()
        return made[-1]

    yield replica, worker
    for pipeline in pipelines:
        pipeline.release_all()
    for part in reversed(made):
        part.close()


def wait_done(fleet: Fleet, job_id: str):
    job = fleet.engine.wait(job_id, timeout=WAIT)
    assert job.done, job
    return job


def test_a_job_admitted_by_one_replica_runs_on_a_worker_and_every_replica_serves_it(fleet) -> None:
    replica, worker = fleet
    worker("w1")
    a, b = replica(), replica()
    job = a.engine.submit(request("a red fox", seed=7))
    done = wait_done(b, job.id)
    assert done.status == "succeeded"
    assert b.engine.image(job.id, 0) == png_for("a red fox", 7)
    events = list(a.engine.subscribe(job.id))
    assert [e.type for e in events][:2] == ["queued", "started"]
    assert isinstance(events[-1], Succeeded) and events[-1].snapshot.result.images[0].png == png_for(
        "a red fox", 7
    )
    assert [e.seq for e in events] == list(range(len(events)))
    resumed = list(b.engine.subscribe(job.id, after=events[2].seq))
    assert [e.seq for e in resumed] == [e.seq for e in events[3:]]


def test_the_queue_bound_holds_across_replicas(fleet) -> None:
    replica, worker = fleet
    busy = FakePipeline()
    hold = busy.hold(step=1)
    worker("w1", pipeline=busy)
    a, b = replica(max_queue=2), replica(max_queue=2)
    a.engine.submit(request("running"))
    hold.wait_reached()  # the worker runs it: the queue is empty again
    a.engine.submit(request())
    b.engine.submit(request())
    with pytest.raises(QueueFull) as refused:
        a.engine.submit(request())
    assert refused.value.retry_after >= 1


def test_a_cancel_from_a_replica_stops_the_running_job_on_its_worker(fleet) -> None:
    replica, worker = fleet
    pipeline = FakePipeline()
    hold = pipeline.hold(step=2)
    worker("w1", pipeline=pipeline)
    a = replica()
    job = a.engine.submit(request())
    hold.wait_reached()
    a.engine.cancel(job.id)
    hold.release()
    assert wait_done(a, job.id).status == "cancelled"


def test_a_job_of_a_worker_that_stopped_is_claimed_and_the_stale_worker_cannot_overwrite_it(fleet) -> None:
    replica, worker = fleet
    stuck = FakePipeline()
    hold = stuck.hold(step=2)
    dead = worker("dead", pipeline=stuck, claim_timeout=1.0)
    a = replica()
    job = a.engine.submit(request("claimed", seed=3))
    hold.wait_reached()
    dead.presence.stop()  # its heartbeat stops, as if killed; its thread is still inside the job
    fresh = FakePipeline()
    worker("alive", pipeline=fresh, claim_timeout=1.0)
    done = wait_done(a, job.id)
    assert done.status == "succeeded" and len(fresh.calls) == 1
    assert a.engine.image(job.id, 0) == png_for("claimed", 3)
    hold.release()  # the stale attempt wakes up: it stops, and its writes are refused
    time.sleep(0.5)
    assert a.engine.get(job.id) == done
    assert stuck.calls[0].closed


def test_a_job_whose_workers_keep_dying_ends_failed_after_max_attempts(fleet) -> None:
    replica, worker = fleet
    a = replica()
    job = None
    for name in ("first", "second"):  # each takes the job, gets stuck in it, and stops beating
        stuck = FakePipeline()
        hold = stuck.hold(step=1)
        dying = worker(name, pipeline=stuck, claim_timeout=0.5, max_attempts=1)
        job = job or a.engine.submit(request("deadly"))
        hold.wait_reached()
        dying.presence.stop()
    worker("third", claim_timeout=0.5, max_attempts=1)
    done = wait_done(a, job.id)
    assert done.status == "failed"
    assert "stopped" in done.error and "2 times" in done.error and "max_attempts is 1" in done.error
