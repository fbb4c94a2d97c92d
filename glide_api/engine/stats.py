"""Counters and duration histograms for the engine, as plain data (a /metrics endpoint renders them).

Histograms are cumulative (bucket counts, sum, count: what a Prometheus histogram exports) and also
keep the most recent observations, from which the queue's retry hint is estimated.
"""

from __future__ import annotations

import math
import threading
from collections import Counter, deque
from typing import Any

# Upper bounds in seconds. Steps take milliseconds on a GPU and seconds to tens of seconds on a CPU;
# whole jobs take seconds on a GPU and up to hours on a CPU.
STEP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0)
JOB_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
RECENT = 256  # observations kept per histogram for estimates and summaries

COUNTERS = (
    "submitted",
    "rejected",
    "succeeded",
    "failed",
    "cancelled",
    "timed_out",
    "stopped",
    "out_of_memory",
    "oom_retries",
    "batches",
    "images",
)
HISTOGRAMS = {
    "job_seconds": JOB_BUCKETS,  # a job's run, from its start to its final status
    "queue_seconds": JOB_BUCKETS,  # a job's wait, from submission to its start
    "batch_seconds": JOB_BUCKETS,  # one sampling batch, from start to output (or failure)
    "step_seconds": STEP_BUCKETS,  # one sampling step of a batch
}


class Histogram:
    """Cumulative buckets, sum and count, plus the last `RECENT` values. Not thread-safe alone."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)  # per bucket, not cumulative; +Inf is `count`
        self.total = 0.0
        self.count = 0
        self.recent: deque[float] = deque(maxlen=RECENT)

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break
        self.total += value
        self.count += 1
        self.recent.append(value)

    def to_dict(self) -> dict[str, Any]:
        cumulative, running = [], 0
        for bound, n in zip(self.bounds, self.counts, strict=True):
            running += n
            cumulative.append([bound, running])
        return {"buckets": cumulative, "sum": self.total, "count": self.count, "recent": list(self.recent)}


class EngineStats:
    """Thread-safe counters and histograms (a leaf lock: nothing is called while holding it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: Counter[str] = Counter(dict.fromkeys(COUNTERS, 0))
        self._histograms = {name: Histogram(bounds) for name, bounds in HISTOGRAMS.items()}

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counters[name] += n

    def observe(self, name: str, value: float) -> None:
        with self._lock:
            self._histograms[name].observe(value)

    def retry_after(self) -> float:
        """Seconds until a queue slot likely frees: a slot frees whenever the worker takes the next
        batch, so the mean recent batch duration (1 s before any batch has run)."""
        with self._lock:
            recent = self._histograms["batch_seconds"].recent
            return max(1.0, math.fsum(recent) / len(recent)) if recent else 1.0

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "counters": dict(self._counters),
                "durations": {name: h.to_dict() for name, h in self._histograms.items()},
            }
