"""The engine with a fake pipeline: admission, batching, cancel, timeouts, failures, events, retention."""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
import time
from pathlib import Path

import pytest
import torch
from engine_fakes import WAIT, Call, FakeClock, FakePipeline, png_for
from PIL import Image

from glide_api.engine import (
    Engine,
    EngineConfig,
    Heartbeat,
    Job,
    MemoryJobStore,
    Progress,
    Queued,
    Succeeded,
    is_out_of_memory,
)
from glide_api.engine.engine import STOPPED
from glide_api.errors import EngineClosed, JobNotFound, NoResult, QueueFull
from glide_api.pipeline.outputs import StageProgress
from glide_api.pipeline.params import GenerationRequest
from glide_api.progress import StepProgress

STEPS = FakePipeline().total_steps  # progress events per run of the fake


def request(
    prompt: str = "a corgi", *, seed: int = 1, batch_size: int = 1, size: int = 64, **settings
) -> GenerationRequest:
    return GenerationRequest.create(prompt, size=size, batch_size=batch_size, seed=seed, **settings)


@pytest.fixture
def pipeline():
    fake = FakePipeline()
    yield fake
    fake.release_all()  # a failing test must not leave the worker stuck


@pytest.fixture
def make_engine(pipeline):
    made: list[Engine] = []

    def make(*, start: bool = True, clock: FakeClock | None = None, **config) -> Engine:
        engine = Engine(pipeline, EngineConfig(**config), **({"clock": clock} if clock else {}))
        made.append(engine)
        if start:
            engine.start()
        return engine

    yield make
    pipeline.release_all()  # a test that stopped at a hold must not keep close() waiting
    for engine in made:
        engine.close(timeout=WAIT)


def finished(engine: Engine, job: Job) -> Job:
    done = engine.wait(job.id, timeout=WAIT)
    assert done.done, f"job {job.id} still {done.status}"
    return done


def images_of(engine: Engine, job: Job) -> list[bytes]:
    return [engine.image(job.id, i) for i in range(job.request["batch_size"])]


# ---- running jobs --------------------------------------------------------------------------------


def test_a_job_runs_to_success_with_its_own_images_and_a_json_safe_record(make_engine, pipeline) -> None:
    engine = make_engine()
    job = engine.submit(request("a corgi", seed=7, batch_size=2))
    assert job.status == "queued" and len(job.id) == 32
    done = finished(engine, job)
    assert done.status == "succeeded" and done.error is None
    assert done.started_at is not None and done.finished_at >= done.started_at >= done.created_at
    assert done.progress.to_dict() == {
        "stage": "upsample",
        "stage_index": 1,
        "stages": 2,
        "step": 2,
        "total": 2,
    }
    assert images_of(engine, done) == [png_for("a corgi", 7), png_for("a corgi", 8)]
    record = json.loads(json.dumps(done.to_dict()))
    assert [im["seed"] for im in record["result"]["images"]] == [7, 8]
    assert record["result"]["images"][1]["index"] == 1 and record["result"]["models"] == {"base": "fake"}
    assert record["request"]["prompt"] == "a corgi" and "image" not in record["request"]
    assert "image" in done.to_dict(include_inputs=True)["request"]


def test_twenty_concurrent_submissions_all_finish_with_their_own_images(make_engine, pipeline) -> None:
    engine = make_engine(max_queue=32, max_batch_images=4)
    jobs: dict[int, Job] = {}
    barrier = threading.Barrier(20)

    def submit(i: int) -> None:
        barrier.wait(WAIT)
        jobs[i] = engine.submit(request(f"prompt {i}", seed=1000 * i, batch_size=1 + i % 2))

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert len(jobs) == 20 and len({job.id for job in jobs.values()}) == 20
    for i, job in jobs.items():
        assert finished(engine, job).status == "succeeded"
        assert images_of(engine, engine.get(job.id)) == [
            png_for(f"prompt {i}", 1000 * i + k) for k in range(1 + i % 2)
        ]
    # Every requested image was sampled exactly once (none lost, none duplicated).
    sampled = sorted((s.prompt, s.seed) for call in pipeline.calls for s in call.samples)
    assert sampled == sorted((f"prompt {i}", 1000 * i + k) for i in range(20) for k in range(1 + i % 2))
    assert all(len(call.samples) <= 4 for call in pipeline.calls)
    assert engine.stats()["counters"]["succeeded"] == 20


# ---- admission -----------------------------------------------------------------------------------


def test_a_full_queue_refuses_at_once_with_a_retry_hint(make_engine) -> None:
    engine = make_engine(start=False, max_queue=2)
    engine.submit(request("one"))
    engine.submit(request("two"))
    began = time.monotonic()
    with pytest.raises(QueueFull) as refused:
        engine.submit(request("three"))
    assert time.monotonic() - began < 1.0
    assert isinstance(refused.value.retry_after, int) and refused.value.retry_after >= 1
    assert [job.request["prompt"] for job in engine.list_jobs()] == ["one", "two"]
    assert engine.stats()["counters"]["rejected"] == 1


def test_the_retry_hint_follows_recent_batch_durations(make_engine, pipeline) -> None:
    clock = FakeClock()
    pipeline.clock, pipeline.step_seconds = clock, 4.0  # 5 steps: a 20 s batch
    engine = make_engine(clock=clock, max_queue=1)
    finished(engine, engine.submit(request("warm-up")))
    hold = pipeline.hold(call=1, step=1)
    engine.submit(request("running"))
    hold.wait_reached()
    engine.submit(request("waiting"))
    with pytest.raises(QueueFull) as refused:
        engine.submit(request("refused"))
    assert refused.value.retry_after == 20


def test_submit_validates_with_the_pipeline_and_the_engine_limits(make_engine) -> None:
    engine = make_engine(start=False, max_batch_images=3)
    with pytest.raises(ValueError, match=r"^size: must be one of 64, 256 \(got 128\)$"):
        engine.submit(request(size=128))
    with pytest.raises(ValueError, match=r"batch_size: at most 3 images"):
        engine.submit(request(batch_size=4))
    assert engine.list_jobs() == []


# ---- cancel --------------------------------------------------------------------------------------


def test_cancelling_a_running_job_stops_it_within_one_step_and_the_next_job_runs(
    make_engine, pipeline
) -> None:
    engine = make_engine()
    hold = pipeline.hold(call=0, step=2)
    first = engine.submit(request("first"))
    hold.wait_reached()
    second = engine.submit(request("second"))
    flagged = engine.cancel(first.id)
    assert flagged.status == "running" and flagged.cancel_requested
    hold.release()
    assert finished(engine, first).status == "cancelled"
    assert pipeline.calls[0].steps == 2 and pipeline.calls[0].closed  # the step in progress, no more
    assert finished(engine, second).status == "succeeded"
    assert pipeline.calls[1].prompts == ["second"]
    with pytest.raises(NoResult):
        engine.image(first.id, 0)


def test_cancelling_a_queued_job_is_immediate_and_it_never_runs(make_engine, pipeline) -> None:
    engine = make_engine(start=False)
    first, second = engine.submit(request("first")), engine.submit(request("second", size=256))
    cancelled = engine.cancel(first.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert engine.get(first.id).status == "cancelled"
    engine.start()
    assert finished(engine, second).status == "succeeded"
    assert [call.prompts for call in pipeline.calls] == [["second"]]
    # The job behind moved up, and was told so.
    positions = [e.position for e in engine.subscribe(second.id, timeout=WAIT) if e.type == "queued"]
    assert positions == [2, 1]
    assert engine.cancel(first.id).status == "cancelled"  # cancelling again changes nothing


def test_cancelling_an_unknown_job_raises_job_not_found(make_engine) -> None:
    engine = make_engine(start=False)
    with pytest.raises(JobNotFound, match="no job 'nope'"):
        engine.cancel("nope")
    with pytest.raises(KeyError):  # JobNotFound is a KeyError too
        engine.get("nope")


# ---- batching ------------------------------------------------------------------------------------


def test_compatible_requests_share_a_batch_and_incompatible_ones_do_not(make_engine, pipeline) -> None:
    engine = make_engine(start=False)
    a = engine.submit(request("a", seed=10, batch_size=2))
    other_size = engine.submit(request("other size", seed=20, size=256))
    b = engine.submit(request("b", seed=30, guidance_scale=5.0))  # guidance is per sample: still compatible
    other_steps = engine.submit(request("other steps", seed=40, base_respacing="50"))
    engine.start()
    for job in (a, other_size, b, other_steps):
        assert finished(engine, job).status == "succeeded"
    assert [call.prompts for call in pipeline.calls] == [["a", "a", "b"], ["other size"], ["other steps"]]
    assert [s.guidance_scale for s in pipeline.calls[0].samples] == [3.0, 3.0, 5.0]
    assert images_of(engine, a) == [png_for("a", 10), png_for("a", 11)]
    assert images_of(engine, b) == [png_for("b", 30)]


def test_a_batch_stays_within_max_batch_images(make_engine, pipeline) -> None:
    engine = make_engine(start=False, max_batch_images=3)
    jobs = [engine.submit(request(name, batch_size=n)) for name, n in (("a", 2), ("b", 2), ("c", 1))]
    engine.start()
    for job in jobs:
        finished(engine, job)
    # b would overflow a's batch and is skipped; c fits and joins; b heads the next batch.
    assert [call.prompts for call in pipeline.calls] == [["a", "a", "c"], ["b", "b"]]


def test_batching_off_never_merges(make_engine, pipeline) -> None:
    engine = make_engine(start=False, batching=False)
    jobs = [engine.submit(request(name)) for name in ("a", "b", "c")]
    engine.start()
    for job in jobs:
        assert finished(engine, job).status == "succeeded"
    assert [call.prompts for call in pipeline.calls] == [["a"], ["b"], ["c"]]


def test_a_batch_mates_cancel_does_not_disturb_the_others(make_engine, pipeline) -> None:
    engine = make_engine(start=False)
    hold = pipeline.hold(call=0, step=2)
    leaving, staying = engine.submit(request("leaving", seed=1)), engine.submit(request("staying", seed=2))
    engine.start()
    hold.wait_reached()
    engine.cancel(leaving.id)
    hold.release()
    assert finished(engine, leaving).status == "cancelled"
    assert finished(engine, staying).status == "succeeded"
    assert images_of(engine, staying) == [png_for("staying", 2)]
    assert len(pipeline.calls) == 1 and pipeline.calls[0].finished and not pipeline.calls[0].closed
    steps = [e.progress.step for e in engine.subscribe(staying.id, timeout=WAIT) if e.type == "progress"]
    assert steps == [1, 2, 3, 1, 2]


def test_cancelling_every_job_of_a_batch_stops_the_pipeline(make_engine, pipeline) -> None:
    engine = make_engine(start=False)
    hold = pipeline.hold(call=0, step=2)
    jobs = [engine.submit(request(name)) for name in ("a", "b")]
    engine.start()
    hold.wait_reached()
    for job in jobs:
        engine.cancel(job.id)
    hold.release()
    assert all(finished(engine, job).status == "cancelled" for job in jobs)
    assert pipeline.calls[0].closed and pipeline.calls[0].steps == 2


# ---- failures ------------------------------------------------------------------------------------


def oom_when_more_than(images: int):
    def fail(call: Call) -> BaseException | None:
        if len(call.samples) > images:
            return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return None

    return fail


def test_out_of_memory_in_a_merged_batch_retries_each_job_alone(make_engine, pipeline) -> None:
    pipeline.fail = oom_when_more_than(1)
    engine = make_engine(start=False)
    a, b = engine.submit(request("a", seed=1)), engine.submit(request("b", seed=2))
    engine.start()
    assert finished(engine, a).status == "succeeded" and finished(engine, b).status == "succeeded"
    assert [call.prompts for call in pipeline.calls] == [["a", "b"], ["a"], ["b"]]
    assert images_of(engine, a) == [png_for("a", 1)] and images_of(engine, b) == [png_for("b", 2)]
    counters = engine.stats()["counters"]
    assert counters["out_of_memory"] == 1 and counters["oom_retries"] == 2 and counters["failed"] == 0


def test_out_of_memory_in_a_single_job_fails_only_it_and_the_next_job_is_served(
    make_engine, pipeline
) -> None:
    pipeline.fail = oom_when_more_than(1)
    engine = make_engine(start=False)
    big, small = engine.submit(request("big", batch_size=2)), engine.submit(request("small", size=256))
    engine.start()
    failed = finished(engine, big)
    assert failed.status == "failed"
    assert failed.error == "out of device memory at a batch of 2 images; try a smaller batch_size"
    assert finished(engine, small).status == "succeeded"
    assert [call.prompts for call in pipeline.calls] == [["big", "big"], ["small"]]


def test_an_ordinary_error_fails_the_batch_jobs_and_the_engine_serves_the_next(
    make_engine, pipeline, caplog
) -> None:
    pipeline.fail = lambda call: RuntimeError("the model broke") if "good" not in call.prompts else None
    engine = make_engine(start=False)
    a, b = engine.submit(request("a")), engine.submit(request("b"))
    good = engine.submit(request("good", size=256))
    with caplog.at_level(logging.ERROR, logger="glide_api.engine"):
        engine.start()
        for job in (a, b):
            done = finished(engine, job)
            assert done.status == "failed"
            assert done.error == "generation failed: RuntimeError: the model broke"
        assert finished(engine, good).status == "succeeded"
    assert len(pipeline.calls) == 2  # an ordinary error is not retried
    logged = [r for r in caplog.records if r.exc_info]
    assert logged and a.id in logged[0].getMessage() and b.id in logged[0].getMessage()


def test_a_pipeline_that_ends_without_output_fails_its_jobs(make_engine, pipeline) -> None:
    pipeline.stages = ()
    engine = make_engine()
    pipeline.stream = lambda settings, samples: iter(())
    done = finished(engine, engine.submit(request()))
    assert done.status == "failed" and "without producing images" in done.error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (torch.OutOfMemoryError("CUDA out of memory"), True),
        (MemoryError(), True),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 10 GB"), True),
        (RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"), True),
        (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"), True),
        (type("XlaOutOfMemoryError", (Exception,), {})("resource exhausted"), True),
        (RuntimeError("shape mismatch"), False),
        (ValueError("size: must be 64"), False),
    ],
)
def test_out_of_memory_is_recognised_by_type_class_name_or_message(error, expected) -> None:
    assert is_out_of_memory(error) is expected


def test_tensors_of_finished_and_failed_runs_are_released(make_engine, pipeline) -> None:
    pipeline.fail = oom_when_more_than(1)
    engine = make_engine(batching=False)
    finished(engine, engine.submit(request("ok")))
    finished(engine, engine.submit(request("too big", batch_size=2)))
    finished(engine, engine.submit(request("last")))  # the worker is past the two runs above
    runs_before_last = pipeline.tensors[: -(STEPS + 1)]
    assert runs_before_last and all(ref() is None for ref in runs_before_last)


# ---- timeouts ------------------------------------------------------------------------------------


def test_a_job_running_past_its_timeout_fails_with_a_clear_message(make_engine, pipeline) -> None:
    clock = FakeClock()
    engine = make_engine(clock=clock, job_timeout=10)
    hold = pipeline.hold(call=0, step=3)
    slow = engine.submit(request("slow"))
    hold.wait_reached()
    following = engine.submit(request("following"))
    clock.advance(10.5)
    hold.release()
    done = finished(engine, slow)
    assert done.status == "failed" and done.error == "timed out after 10 s (the server's job_timeout)"
    assert pipeline.calls[0].closed and pipeline.calls[0].steps == 3
    assert finished(engine, following).status == "succeeded"  # its timeout counts from its own start
    assert engine.stats()["counters"]["timed_out"] == 1


# ---- events --------------------------------------------------------------------------------------


def test_subscribe_yields_queued_started_every_step_then_succeeded(make_engine) -> None:
    engine = make_engine(start=False)
    job = engine.submit(request())
    events = engine.subscribe(job.id, timeout=WAIT)
    engine.start()
    seen = [event.to_dict() for event in events]
    assert [e["type"] for e in seen] == ["queued", "started"] + ["progress"] * STEPS + ["succeeded"]
    assert [e["seq"] for e in seen] == list(range(len(seen)))
    assert seen[0]["position"] == 1 and {e["job_id"] for e in seen} == {job.id}
    steps = [(e["stage"], e["stage_index"], e["step"], e["total"]) for e in seen if e["type"] == "progress"]
    assert steps == [
        ("base", 0, 1, 3),
        ("base", 0, 2, 3),
        ("base", 0, 3, 3),
        ("upsample", 1, 1, 2),
        ("upsample", 1, 2, 2),
    ]
    assert seen[-1]["job"]["status"] == "succeeded" and seen[-1]["job"]["id"] == job.id
    json.dumps(seen)


def test_a_late_subscriber_gets_the_history_then_live_events(make_engine, pipeline) -> None:
    engine = make_engine()
    hold = pipeline.hold(call=0, step=3)
    job = engine.submit(request())
    hold.wait_reached()
    events = engine.subscribe(job.id, timeout=WAIT)
    early = [next(events) for _ in range(4)]
    assert [(e.type, e.to_dict().get("step")) for e in early] == [
        ("queued", None),
        ("started", None),
        ("progress", 1),
        ("progress", 2),
    ]
    hold.release()
    rest = list(events)
    assert [e.type for e in rest] == ["progress"] * (STEPS - 2) + ["succeeded"]
    replay = list(engine.subscribe(job.id, timeout=WAIT))  # a finished job: its history, then the end
    assert [e.to_dict() for e in replay] == [e.to_dict() for e in early + rest]
    assert [e.seq for e in engine.subscribe(job.id, after=4)] == list(range(5, len(replay)))


def test_a_slow_subscriber_never_holds_up_the_worker(make_engine) -> None:
    engine = make_engine(start=False)
    job = engine.submit(request())
    events = engine.subscribe(job.id, timeout=WAIT)
    assert next(events).type == "queued"  # subscribed, then stops reading
    engine.start()
    assert finished(engine, job).status == "succeeded"
    assert [e.type for e in events][-1] == "succeeded"  # nothing it missed was lost


def count_previews(monkeypatch) -> list[int]:
    """Record every preview the worker has rendered (the row of each)."""
    rendered: list[int] = []
    real_preview_png = StageProgress.preview_png

    def recording(self: StageProgress, row: int) -> bytes:
        rendered.append(row)
        return real_preview_png(self, row)

    monkeypatch.setattr(StageProgress, "preview_png", recording)
    return rendered


def test_previews_are_rendered_only_for_subscribers_who_ask(make_engine, pipeline, monkeypatch) -> None:
    rendered = count_previews(monkeypatch)
    engine = make_engine(start=False, preview_every=2)
    watched, mate = engine.submit(request("watched")), engine.submit(request("batch-mate"))
    watching = engine.subscribe(watched.id, previews=True, timeout=WAIT)
    not_watching = engine.subscribe(mate.id, previews=False, timeout=WAIT)
    assert next(watching).type == next(not_watching).type == "queued"  # both subscribed now
    hold = pipeline.hold(call=0, step=STEPS + 1)  # keep the run open until the watcher has read its steps
    engine.start()
    hold.wait_reached()
    assert next(watching).type == "started"
    progress = [next(watching) for _ in range(STEPS)]
    hold.release()
    assert [e.type for e in watching] == ["succeeded"]
    assert [call.prompts for call in pipeline.calls] == [["watched", "batch-mate"]]
    with_preview = [(e.progress.stage, e.progress.step) for e in progress if e.preview is not None]
    assert with_preview == [("base", 2), ("base", 3), ("upsample", 2)]  # every 2 steps and each stage's end
    assert len(rendered) == 3  # for the watched job only, not for its batch-mate
    image = Image.open(io.BytesIO(base64.b64decode(progress[1].preview)))
    assert image.size == (4, 4) and image.getpixel((0, 0)) == (0, 0, 0)  # its own row (-1: black)
    assert all(getattr(e, "preview", None) is None for e in not_watching)
    replay = [e for e in engine.subscribe(watched.id, timeout=WAIT) if e.type == "progress"]
    assert all(e.preview is None for e in replay)  # previews are not kept in the history


def test_a_lagging_preview_subscriber_still_gets_the_latest_previews(make_engine) -> None:
    engine = make_engine(start=False, preview_every=2)
    job = engine.submit(request())
    watching = engine.subscribe(job.id, previews=True, timeout=WAIT)
    assert next(watching).type == "queued"
    engine.start()
    assert finished(engine, job).status == "succeeded"  # the whole run passed while it did not read
    late = [(e.progress.stage, e.progress.step) for e in watching if getattr(e, "preview", None)]
    assert late == [("base", 2), ("base", 3), ("upsample", 2)]  # the last few are kept for it


def test_no_preview_is_rendered_when_nobody_asks(make_engine, monkeypatch) -> None:
    rendered = count_previews(monkeypatch)
    engine = make_engine(start=False, preview_every=1)
    job = engine.submit(request())
    events = engine.subscribe(job.id, timeout=WAIT)
    next(events)
    engine.start()
    assert all(getattr(e, "preview", None) is None for e in events)
    assert rendered == []


def test_preview_every_zero_never_renders(make_engine, pipeline, monkeypatch) -> None:
    monkeypatch.setattr(StageProgress, "preview_png", lambda self, row: pytest.fail("a preview was rendered"))
    engine = make_engine(start=False, preview_every=0)
    job = engine.submit(request())
    events = engine.subscribe(job.id, previews=True, timeout=WAIT)
    next(events)
    engine.start()
    assert all(getattr(e, "preview", None) is None for e in events)


def test_a_subscription_can_beat_while_quiet_and_times_out(make_engine) -> None:
    engine = make_engine(start=False)
    job = engine.submit(request())
    beating = engine.subscribe(job.id, heartbeat=0.01, timeout=WAIT)
    assert next(beating).type == "queued"
    assert isinstance(next(beating), Heartbeat)
    with pytest.raises(TimeoutError):
        list(engine.subscribe(job.id, timeout=0.05))
    with pytest.raises(JobNotFound):
        engine.subscribe("nope")


# ---- waiting, results, retention, shutdown --------------------------------------------------------


def test_wait_returns_the_snapshot_when_its_timeout_passes(make_engine) -> None:
    engine = make_engine(start=False)
    job = engine.submit(request())
    assert engine.wait(job.id, timeout=0.01).status == "queued"
    with pytest.raises(NoResult):
        engine.image(job.id, 0)


def test_image_index_out_of_range_is_an_index_error(make_engine) -> None:
    engine = make_engine()
    job = finished(engine, engine.submit(request(batch_size=2)))
    with pytest.raises(IndexError, match=r"index: must be an integer in \[0, 1\]"):
        engine.image(job.id, 2)


def test_finished_jobs_beyond_keep_finished_are_evicted(make_engine) -> None:
    engine = make_engine(keep_finished=2)
    jobs = [finished(engine, engine.submit(request(f"job {i}"))) for i in range(3)]
    for call in (engine.get, lambda job_id: engine.image(job_id, 0), engine.subscribe, engine.wait):
        with pytest.raises(JobNotFound):
            call(jobs[0].id)
    assert [job.id for job in engine.list_jobs()] == [jobs[1].id, jobs[2].id]
    assert engine.image(jobs[2].id, 0) == png_for("job 2", 1)


def test_finished_jobs_are_evicted_oldest_first_beyond_keep_finished_bytes(make_engine) -> None:
    engine = make_engine(keep_finished_bytes=100)
    small = [finished(engine, engine.submit(request("s" * 40, seed=i))) for i in range(3)]  # 42 B each
    assert [job.held_bytes for job in small] == [42, 42, 42]
    assert [job.id for job in engine.list_jobs()] == [small[1].id, small[2].id]  # 126 B > 100: one out
    # A job bigger than the bound alone is still kept (its client has yet to fetch it), alone.
    big = finished(engine, engine.submit(request("b" * 200)))
    assert [job.id for job in engine.list_jobs()] == [big.id]
    assert engine.image(big.id, 0) == png_for("b" * 200, 1)
    after = finished(engine, engine.submit(request("after")))  # the next finish evicts it
    assert [job.id for job in engine.list_jobs()] == [after.id]
    with pytest.raises(JobNotFound):
        engine.get(big.id)


def test_a_finished_job_no_longer_holds_its_uploads(make_engine, pipeline) -> None:
    image, mask = b"image" * 2000, b"mask" * 1000
    engine = make_engine(start=False)
    painted = engine.submit(request("paint", task="inpaint", image=image, mask=mask))
    dropped = engine.submit(request("cancelled", task="inpaint", image=image, size=256))
    queued = engine.get(painted.id)
    assert base64.b64decode(queued.request["image"]) == image
    assert queued.held_bytes == len(queued.request["image"]) + len(queued.request["mask"])  # base64
    engine.cancel(dropped.id)
    engine.start()
    done = finished(engine, painted)
    assert done.status == "succeeded" and pipeline.calls[0].samples[0].image == image  # the run had it
    for job in (done, engine.get(dropped.id)):
        assert job.request["image"] is None and job.request["mask"] is None
        assert job.to_dict(include_inputs=True)["request"]["image"] is None
    assert done.held_bytes == len(png_for("paint", 1)) and engine.get(dropped.id).held_bytes == 0
    assert done.request["settings"]["task"] == "inpaint" and done.result.images[0].metadata["seed"] == 1


def test_a_stream_still_gets_the_images_of_a_job_evicted_after_its_final_event(make_engine) -> None:
    engine = make_engine(start=False, keep_finished=1)
    first = engine.submit(request("first"))
    events = engine.subscribe(first.id, timeout=WAIT)
    assert next(events).type == "queued"  # subscribed, then the job finishes and is evicted
    engine.start()
    finished(engine, first)
    finished(engine, engine.submit(request("second")))
    with pytest.raises(JobNotFound):
        engine.get(first.id)
    final = list(events)[-1]
    assert isinstance(final, Succeeded) and final.snapshot.id == first.id
    assert [image.png for image in final.snapshot.result.images] == [png_for("first", 1)]
    assert final.to_dict() == {"type": "succeeded", "job_id": first.id, "seq": final.seq, "job": final.job}


def test_watchers_counts_active_waits_and_subscriptions(make_engine) -> None:
    engine = make_engine(start=False)
    job = engine.submit(request())
    assert engine.watchers(job.id) == 0
    waiter = threading.Thread(target=engine.wait, args=(job.id,), kwargs={"timeout": WAIT})
    waiter.start()
    until(lambda: engine.watchers(job.id) == 1)
    events = engine.subscribe(job.id, timeout=WAIT)
    assert engine.watchers(job.id) == 1  # a subscription counts from its first read
    next(events)
    assert engine.watchers(job.id) == 2
    events.close()
    assert engine.watchers(job.id) == 1
    reading = engine.subscribe(job.id, timeout=WAIT)
    next(reading)
    engine.start()
    assert [e.type for e in reading][-1] == "succeeded"
    waiter.join(WAIT)
    assert engine.watchers(job.id) == 0  # every wait and subscription has ended
    with pytest.raises(JobNotFound):
        engine.watchers("nope")


def until(condition) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.001)


def wakeups(thread: threading.Thread) -> int:
    """How often the OS has switched to `thread` (every wake-up from a wait is one or more)."""
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    return sum(int(line.split()[1]) for line in status.splitlines() if "ctxt_switches" in line)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads wake-ups from Linux's /proc")
def test_a_waiter_of_one_job_sleeps_through_another_jobs_progress() -> None:
    store = MemoryJobStore(keep_finished=4, keep_finished_bytes=1 << 20)
    watched, busy = Job.new(request("watched"), at=0.0), Job.new(request("busy"), at=0.0)
    for job in (watched, busy):
        store.add(job, Queued(job_id=job.id, position=1))
        store.start(job.id, at=0.0)
    seen: list[str] = []
    subscription = store.events(watched.id, timeout=WAIT)
    threads = [
        threading.Thread(target=store.wait, args=(watched.id,), kwargs={"timeout": WAIT}),
        threading.Thread(target=lambda: seen.extend(event.type for event in subscription)),
    ]
    for thread in threads:
        thread.start()
    until(lambda: store.watchers(watched.id) == 2 and seen == ["queued", "started"])
    time.sleep(0.05)  # both are now asleep in their wait
    before = [wakeups(thread) for thread in threads]

    def step(job: Job, n: int) -> Progress:
        at = StepProgress(stage="base", stage_index=0, stages=1, step=n, total=100)
        return Progress(job_id=job.id, progress=at, elapsed=0.0)

    for n in range(1, 51):
        store.advance(busy.id, step(busy, n))
        time.sleep(0.002)  # time for a woken thread to run (and be counted)
    assert [wakeups(thread) - b for thread, b in zip(threads, before, strict=True)] == [0, 0]
    store.advance(watched.id, step(watched, 1))
    until(lambda: seen[-1] == "progress")  # its own job's events do wake it
    store.finish(watched.id, "cancelled", at=1.0)
    for thread in threads:
        thread.join(WAIT)
    assert seen == ["queued", "started", "progress", "cancelled"]


def test_close_ends_waiting_jobs_at_once_and_running_ones_after_the_grace_saying_the_server_stopped(
    make_engine, pipeline
) -> None:
    engine = make_engine()
    hold = pipeline.hold(call=0, step=2)
    running = engine.submit(request("running"))
    hold.wait_reached()
    waiting = [engine.submit(request(f"waiting {i}", size=256)) for i in range(2)]
    closer = threading.Thread(target=engine.close, kwargs={"grace": 0.3})
    closer.start()
    for job in waiting:
        ended = engine.wait(job.id, timeout=WAIT)
        assert (ended.status, ended.error) == ("failed", STOPPED)
        assert list(engine.subscribe(job.id))[-1].to_dict()["message"] == STOPPED
    time.sleep(0.5)  # past the grace: the running job is ended although its step is still held
    assert (engine.get(running.id).status, engine.get(running.id).error) == ("failed", STOPPED)
    hold.release()
    closer.join(WAIT)
    assert not closer.is_alive() and not engine.stats()["worker_alive"]
    assert len(pipeline.calls) == 1 and pipeline.calls[0].closed
    assert engine.stats()["counters"]["stopped"] == 3
    engine.close()  # idempotent
    with pytest.raises(EngineClosed):
        engine.submit(request())
    with pytest.raises(EngineClosed):
        engine.start()


def test_close_lets_the_running_batch_finish_within_the_grace(make_engine, pipeline) -> None:
    engine = make_engine()
    hold = pipeline.hold(call=0, step=2)
    running = engine.submit(request("running"))
    hold.wait_reached()
    closer = threading.Thread(target=engine.close, kwargs={"grace": WAIT})
    closer.start()
    deadline = time.monotonic() + WAIT
    with pytest.raises(EngineClosed):  # refused as soon as close() has begun
        while time.monotonic() < deadline:
            engine.submit(request("too late", size=256))
    hold.release()
    closer.join(WAIT)
    assert engine.get(running.id).status == "succeeded" and not closer.is_alive()


def test_the_engine_is_a_context_manager(pipeline) -> None:
    with Engine(pipeline) as engine:
        job = finished(engine, engine.submit(request()))
    assert job.status == "succeeded" and not engine.stats()["worker_alive"]


def test_stats_are_plain_data_with_counters_and_durations(make_engine, pipeline) -> None:
    clock = FakeClock()
    pipeline.clock, pipeline.step_seconds = clock, 0.5
    engine = make_engine(clock=clock)
    finished(engine, engine.submit(request()))
    stats = json.loads(json.dumps(engine.stats()))
    assert stats["queue_depth"] == 0 and stats["jobs"]["succeeded"] == 1
    assert stats["counters"]["submitted"] == 1 and stats["counters"]["images"] == 1
    steps = stats["durations"]["step_seconds"]
    assert steps["count"] == STEPS and steps["recent"] == [0.5] * STEPS and steps["sum"] == 0.5 * STEPS
    assert dict(map(tuple, steps["buckets"]))[0.5] == STEPS
    assert stats["durations"]["job_seconds"]["recent"] == [0.5 * STEPS]


def test_engine_config_rejects_bad_limits() -> None:
    with pytest.raises(ValueError, match=r"^max_queue: "):
        EngineConfig(max_queue=0)
    with pytest.raises(ValueError, match=r"^job_timeout: "):
        EngineConfig(job_timeout=float("inf"))
    with pytest.raises(ValueError, match=r"^preview_every: "):
        EngineConfig(preview_every=-1)
    with pytest.raises(ValueError, match=r"^keep_finished_seconds: "):
        EngineConfig(keep_finished_seconds=0)
    assert EngineConfig().to_dict() == {
        "max_queue": 32,
        "max_batch_images": 8,
        "batching": True,
        "job_timeout": 1800.0,
        "keep_finished": 256,
        "keep_finished_bytes": 1 << 30,
        "keep_finished_seconds": 7 * 24 * 3600.0,
        "preview_every": 5,
    }


def test_on_change_is_told_each_status_a_job_reaches(pipeline) -> None:
    told: list[tuple[str, str]] = []
    engine = Engine(pipeline, EngineConfig(), on_change=lambda job: told.append((job.id, job.status)))
    waiting = engine.submit(request("waits"))  # not started yet: cancelled while queued
    engine.cancel(waiting.id)
    with engine:
        job = engine.submit(request("runs"))
        assert engine.wait(job.id, timeout=WAIT).status == "succeeded"
    assert told == [
        (waiting.id, "queued"),
        (waiting.id, "cancelled"),
        (job.id, "queued"),
        (job.id, "running"),
        (job.id, "succeeded"),
    ]
