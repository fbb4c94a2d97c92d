"""The durable embedded store (SQLite + image files in a data dir): restart recovery, retention,
the lock, with the fake pipeline."""

from __future__ import annotations

import threading
import time

import pytest
from engine_fakes import WAIT, FakeClock, FakePipeline, png_for

from glide_api.engine import Engine, EngineConfig, open_durable_store
from glide_api.errors import DataDirBusy, JobNotFound
from glide_api.pipeline.params import GenerationRequest

STEPS = FakePipeline().total_steps


def request(prompt: str, *, seed: int = 1, size: int = 64, **settings) -> GenerationRequest:
    return GenerationRequest.create(prompt, size=size, seed=seed, **settings)


def store(folder, **retention):
    limits = {"keep_finished": 8, "keep_finished_bytes": 1 << 20} | retention
    return open_durable_store(folder, **limits)


def engine_on(folder, pipeline=None, **retention) -> Engine:
    engine = Engine(pipeline or FakePipeline(), EngineConfig(max_queue=2), store=store(folder, **retention))
    engine.start()
    return engine


def test_after_a_stop_mid_run_the_queued_and_running_jobs_run_and_finished_ones_are_still_served(
    tmp_path,
) -> None:
    first_run = FakePipeline()
    engine = engine_on(tmp_path, first_run)
    done = engine.wait(engine.submit(request("done"), owner="alice").id, timeout=WAIT)
    hold = first_run.hold(call=1, step=2)
    running = engine.submit(request("running", seed=7), owner="bob")
    hold.wait_reached()
    queued = [engine.submit(request(f"queued {i}", size=256)) for i in range(2)]
    open_stream = engine.subscribe(queued[0].id, timeout=WAIT)
    waiter = threading.Thread(target=engine.wait, args=(queued[1].id,))
    waiter.start()
    closer = threading.Thread(target=engine.close, kwargs={"grace": 0})  # nothing more is written
    closer.start()
    assert [event.type for event in open_stream] == ["queued"]  # ended without a final event
    waiter.join(WAIT)
    hold.release()
    closer.join(WAIT)
    assert not waiter.is_alive() and first_run.calls[1].closed

    second_run = FakePipeline()
    engine = engine_on(tmp_path, second_run)
    try:
        for job in (running, *queued):
            finished = engine.wait(job.id, timeout=WAIT)
            assert finished.status == "succeeded", finished
            assert engine.image(job.id, 0) == png_for(job.request["prompt"], job.request["seeds"][0])
        # re-admitted in their order, even past max_queue; the running one from the start
        assert [call.prompts for call in second_run.calls] == [["running"], ["queued 0", "queued 1"]]
        assert second_run.calls[0].steps == STEPS
        history = [event.type for event in engine.subscribe(running.id)]
        assert history == ["queued", "started", "progress", "queued", "started"] + ["progress"] * STEPS + [
            "succeeded"
        ]
        assert [engine.get(job.id).owner for job in (done, running)] == ["alice", "bob"]
        assert engine.image(done.id, 0) == png_for("done", 1)
        replay = list(engine.subscribe(done.id))
        assert replay[-1].type == "succeeded" and replay[-1].snapshot.result.images[0].png == png_for(
            "done", 1
        )
        # finished jobs' images are read from their files, not held in memory
        assert all(image.held is None for image in engine.get(done.id).result.images)
    finally:
        engine.close()


def test_a_running_job_whose_cancel_was_requested_ends_cancelled_after_a_restart(tmp_path) -> None:
    pipeline = FakePipeline()
    engine = engine_on(tmp_path, pipeline)
    hold = pipeline.hold(call=0, step=2)
    job = engine.submit(request("cancel me"))
    hold.wait_reached()
    engine.cancel(job.id)  # recorded; the stop comes before the worker's next step sees it
    closer = threading.Thread(target=engine.close, kwargs={"grace": 0})
    closer.start()
    until_stopped(engine)
    hold.release()
    closer.join(WAIT)
    engine = engine_on(tmp_path)
    try:
        assert engine.get(job.id).status == "cancelled"
        assert [e.type for e in engine.subscribe(job.id)][-2:] == ["progress", "cancelled"]
    finally:
        engine.close()


def until_stopped(engine: Engine) -> None:
    deadline = time.monotonic() + WAIT
    while not engine.stopped:
        assert time.monotonic() < deadline
        time.sleep(0.001)


def test_a_queued_inpainting_job_keeps_its_uploads_across_a_restart_and_drops_them_when_done(
    tmp_path,
) -> None:
    image = b"image" * 100
    engine = Engine(FakePipeline(), store=store(tmp_path))  # never started: the job stays queued
    job = engine.submit(request("paint", task="inpaint", image=image))
    engine.close()
    pipeline = FakePipeline()
    engine = engine_on(tmp_path, pipeline)
    try:
        assert engine.wait(job.id, timeout=WAIT).status == "succeeded"
        assert pipeline.calls[0].samples[0].image == image
        assert engine.get(job.id).request["image"] is None
    finally:
        engine.close()
    reopened = store(tmp_path)
    assert reopened.get(job.id).request["image"] is None
    reopened.close()


def test_retention_by_count_and_bytes_applies_across_restarts_and_deletes_the_files(tmp_path) -> None:
    engine = engine_on(tmp_path, keep_finished=2)
    jobs = [engine.wait(engine.submit(request(f"job {i}")).id, timeout=WAIT) for i in range(3)]
    engine.close()
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted(j.id for j in jobs[1:])
    reopened = store(tmp_path, keep_finished=8, keep_finished_bytes=len(png_for("job 2", 1)))
    assert [job.id for job in reopened.jobs()] == [jobs[2].id]  # the newest is always kept
    assert [p.name for p in (tmp_path / "images").iterdir()] == [jobs[2].id]
    reopened.close()


def test_a_finished_job_is_evicted_keep_finished_seconds_after_it_finished(tmp_path) -> None:
    clock = FakeClock()
    limits = {"keep_finished": 8, "keep_finished_bytes": 1 << 20, "keep_finished_seconds": 60.0}
    kept = open_durable_store(tmp_path, **limits, clock=clock)
    engine = Engine(FakePipeline(), store=kept, wall_clock=clock)  # one clock stamps and ages jobs
    engine.start()
    job = engine.wait(engine.submit(request("old")).id, timeout=WAIT)
    clock.advance(59)
    assert engine.image(job.id, 0) == png_for("old", 1)
    clock.advance(1)
    with pytest.raises(JobNotFound):
        engine.get(job.id)
    assert list((tmp_path / "images").iterdir()) == []
    engine.close()


def test_a_data_dir_has_one_owner_at_a_time(tmp_path) -> None:
    owner = store(tmp_path)
    with pytest.raises(DataDirBusy, match=f"data_dir {tmp_path}: another glide-api process"):
        store(tmp_path)
    owner.close()
    store(tmp_path).close()


def test_an_image_file_gone_is_a_clear_job_not_found(tmp_path) -> None:
    engine = engine_on(tmp_path)
    try:
        job = engine.wait(engine.submit(request("x")).id, timeout=WAIT)
        (tmp_path / "images" / job.id / "0.png").unlink()
        with pytest.raises(JobNotFound, match=r"image file .* is gone"):
            engine.image(job.id, 0)
    finally:
        engine.close()
