"""A job as the v1 API shows it: status, progress, the request, and a URL per image (no bytes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..engine import Job
from ..options import WHOLE_SCHEDULE


def job_json(
    job: Job, image_url: Callable[[str, int], str], *, webhook: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The job; `webhook` is its webhook record (`JobWebhooks.describe`), None without one."""
    request = job.request
    result = job.result
    return {
        "id": job.id,
        "status": job.status,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "progress": None if job.progress is None else job.progress.to_dict(),
        "error": job.error,
        "request": {
            "prompt": request["prompt"],
            "task": request["settings"]["task"],
            "size": request["settings"]["size"],
            "batch_size": request["batch_size"],
            "guidance_scale": request["guidance_scale"],
            "negative_prompt": request.get("negative_prompt", ""),  # absent in jobs stored before
            "guidance_interval": request.get("guidance_interval", list(WHOLE_SCHEDULE)),
            "seeds": request["seeds"],
            "settings": request["settings"],
        },
        "images": []
        if result is None
        else [
            {"index": i, "seed": im.seed, "url": image_url(job.id, i), "metadata": im.metadata}
            for i, im in enumerate(result.images)
        ],
        "chain": [] if result is None else list(result.chain),
        "stage_seconds": {} if result is None else dict(result.stage_seconds),
        "total_seconds": None if result is None else result.total_seconds,
        "peak_memory_bytes": None if result is None else result.peak_memory_bytes,
        "webhook": webhook,
    }
