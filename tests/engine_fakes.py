"""A pipeline and a clock that engine tests control: hold a run at a step, inject failures, move time."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image

from glide_api.pipeline.outputs import GeneratedImage, PipelineOutput, StageProgress
from glide_api.pipeline.params import BatchSettings, Sample
from glide_api.progress import StepProgress

WAIT = 5.0  # the longest any test waits for a thread to get somewhere; passing tests never wait this long
STAGES = (("base", 3), ("upsample", 2))


class FakeClock:
    """Monotonic seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


class Hold:
    """Stops one run just before it produces a given step, until released."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.released = threading.Event()

    def wait_reached(self) -> None:
        assert self.reached.wait(WAIT), "the pipeline never reached the held step"

    def release(self) -> None:
        self.released.set()


@dataclass
class Call:
    """One `stream()` call as the fake saw it."""

    settings: BatchSettings
    samples: list[Sample]
    steps: int = 0  # progress items produced
    closed: bool = False  # the engine closed the stream before the end
    finished: bool = False  # the stream ran to its end

    @property
    def prompts(self) -> list[str]:
        return [s.prompt for s in self.samples]


def png_for(prompt: str, seed: int) -> bytes:
    """What the fake's "PNG" of a sample is: enough to tell every image apart."""
    return f"{prompt}|{seed}".encode()


@dataclass
class FakePipeline:
    """Two stages (base 3 steps, upsample 2 steps), then the output; sizes 64 and 256.

    `fail(call)` may return an exception to raise before the first step. `clock` and `step_seconds`
    move a fake clock by that much per step.
    """

    stages: tuple[tuple[str, int], ...] = STAGES
    fail: Callable[[Call], BaseException | None] | None = None
    clock: FakeClock | None = None
    step_seconds: float = 0.0
    calls: list[Call] = field(default_factory=list)
    tensors: list[weakref.ref] = field(default_factory=list)  # every pred_x0 made, to check they die
    _holds: dict[tuple[int, int], Hold] = field(default_factory=dict)

    @property
    def total_steps(self) -> int:
        return sum(total for _, total in self.stages)

    def hold(self, *, call: int = 0, step: int) -> Hold:
        """Hold the `call`-th run (0-based) before step `step` (1-based over all stages; one past the
        last step holds it before the output)."""
        hold = self._holds[call, step] = Hold()
        return hold

    def release_all(self) -> None:
        for hold in self._holds.values():
            hold.release()

    def validate(self, settings: BatchSettings) -> None:
        if settings.size not in (64, 256):
            raise ValueError(f"size: must be one of 64, 256 (got {settings.size})")

    def stream(
        self, settings: BatchSettings, samples: Sequence[Sample]
    ) -> Iterator[StageProgress | PipelineOutput]:
        call = Call(settings, list(samples))
        self.calls.append(call)
        return self._run(len(self.calls) - 1, call)

    def _run(self, index: int, call: Call) -> Iterator[StageProgress | PipelineOutput]:
        try:
            scratch = torch.zeros(len(call.samples), 3, 4, 4)  # stands in for device memory
            self.tensors.append(weakref.ref(scratch))
            if self.fail is not None and (error := self.fail(call)) is not None:
                raise error
            done = 0
            for stage_index, (stage, total) in enumerate(self.stages):
                for step in range(1, total + 1):
                    self._wait_if_held(index, done + 1)
                    if self.clock is not None:
                        self.clock.advance(self.step_seconds)
                    done += 1
                    call.steps += 1
                    # Row i is filled with a value of its own, so a preview shows whose row it is.
                    rows = torch.linspace(-1, 1, len(call.samples))
                    pred = rows.view(-1, 1, 1, 1).expand(-1, 3, 4, 4).clone()  # [B, 3, 4, 4]
                    self.tensors.append(weakref.ref(pred))
                    at = StepProgress(
                        stage=stage, stage_index=stage_index, stages=len(self.stages), step=step, total=total
                    )
                    yield StageProgress(progress=at, elapsed=0.0, pred_x0=pred)
            self._wait_if_held(index, done + 1)
            images = [
                GeneratedImage(
                    image=Image.new("RGB", (4, 4)),
                    png=png_for(s.prompt, s.seed),
                    seed=s.seed,
                    prompt=s.prompt,
                    metadata={"prompt": s.prompt, "seed": s.seed},
                )
                for s in call.samples
            ]
            yield PipelineOutput(
                images=images,
                chain=["base 64"],
                stage_seconds={"base": 0.1},
                total_seconds=0.1,
                peak_memory_bytes=None,
                models={"base": "fake"},
            )
            call.finished = True
        except GeneratorExit:
            call.closed = True
            raise

    def _wait_if_held(self, index: int, step: int) -> None:
        hold = self._holds.get((index, step))
        if hold is not None:
            hold.reached.set()
            assert hold.released.wait(WAIT), f"run {index} held at step {step} was never released"
