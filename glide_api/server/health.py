"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from apiflask import APIBlueprint
from flask import Response

from .openapi import schema_ref
from .schemas import ReadinessOut
from .views import service

bp = APIBlueprint("health", __name__, tag="Service")


@bp.get("/healthz")
@bp.doc(summary="Liveness: the process answers")
def healthz() -> dict[str, Any]:
    return {"status": "ok"}


NOT_READY = (
    "none does yet, or the server is shutting down (`stopping`): `reason`, and `missing` files with "
    "the `command` that fetches them"
)


@bp.get("/readyz")
@bp.doc(
    summary="Readiness: 200 once a capability (text-to-image, inpainting) is ready, else 503",
    description="`capabilities` gives each one's `state` (ready, loading, missing, failed, off) with "
    "its `reason`, `models`, `missing` files, the `command` that fetches them and `advice`; the "
    "top level sums up those not ready.",
    responses={
        code: {"description": text, "content": {"application/json": {"schema": schema_ref(ReadinessOut)}}}
        for code, text in (
            (200, "at least one capability serves requests"),
            (503, NOT_READY),
        )
    },
)
def readyz() -> tuple[dict[str, Any], int]:
    status = service().readiness()
    return status, 200 if status["ready"] else 503


@bp.get("/metrics")
@bp.doc(
    summary="Prometheus metrics",
    responses={
        200: {
            "description": "text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
def metrics() -> Response:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ServiceCollector())
    return Response(generate_latest(registry), mimetype="text/plain; version=0.0.4")


class _ServiceCollector:
    """Reads the engine's plain-data stats at scrape time (nothing is counted twice)."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        svc = service()
        ready = GaugeMetricFamily(
            "glide_ready", "1 when at least one capability (text2im, inpaint) serves jobs"
        )
        ready.add_metric([], 1.0 if svc.ready else 0.0)
        yield ready
        capability = GaugeMetricFamily(
            "glide_capability_ready", "1 when a capability's models are loaded", labels=["capability"]
        )
        for task, status in svc.readiness()["capabilities"].items():
            capability.add_metric([task], 1.0 if status["state"] == "ready" else 0.0)
        yield capability
        if not svc.ready:
            return
        stats = svc.engine.stats()
        depth = GaugeMetricFamily("glide_queue_depth", "jobs waiting")
        depth.add_metric([], stats["queue_depth"])
        yield depth
        if svc.fleet is not None:
            workers = GaugeMetricFamily("glide_workers", "live workers of the fleet (heartbeat current)")
            workers.add_metric([], len(svc.fleet.engine.pipeline.workers()))
            yield workers
        jobs = GaugeMetricFamily("glide_jobs", "jobs held, by status", labels=["status"])
        for status, n in stats["jobs"].items():
            jobs.add_metric([status], n)
        yield jobs
        for name, value in stats["counters"].items():
            counter = CounterMetricFamily(f"glide_{name}", f"engine counter: {name.replace('_', ' ')}")
            counter.add_metric([], value)
            yield counter
        for name, h in stats["durations"].items():
            buckets = [(str(bound), count) for bound, count in h["buckets"]] + [("+Inf", h["count"])]
            histogram = HistogramMetricFamily(f"glide_{name}", f"{name.replace('_', ' ')}")
            histogram.add_metric([], buckets, h["sum"])
            yield histogram
        memory = svc.engine.pipeline.device_memory()
        for kind in ("allocated", "reserved"):
            gauge = GaugeMetricFamily(f"glide_device_memory_{kind}_bytes", f"device memory {kind} by torch")
            gauge.add_metric([], memory[kind])
            yield gauge
