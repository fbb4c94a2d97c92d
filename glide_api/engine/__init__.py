"""The engine: a bounded queue, a job registry and one device-owning worker around a pipeline.

    from glide_api.engine import Engine, EngineConfig
    with Engine(pipeline, EngineConfig(max_queue=32)) as engine:
        job = engine.submit(request)
        job = engine.wait(job.id, timeout=600)

Modules follow the job's path: `queue` (admission) -> `worker` (the device loop) -> `store` (jobs,
events, results; `durable` writes them through to SQLite and files); `jobs` and `events` are the
plain data they exchange; `engine` is the facade.
"""

from .durable import open_durable_store
from .engine import Engine, EngineConfig
from .events import Cancelled, Event, Failed, Heartbeat, Progress, Queued, Started, Succeeded, event_from_dict
from .jobs import ImageResult, Job, JobResult, JobStatus
from .store import JobStore, MemoryJobStore, Persistence
from .worker import Pipeline, is_out_of_memory

__all__ = [
    "Cancelled",
    "Engine",
    "EngineConfig",
    "Event",
    "Failed",
    "Heartbeat",
    "ImageResult",
    "Job",
    "JobResult",
    "JobStatus",
    "JobStore",
    "MemoryJobStore",
    "Persistence",
    "Pipeline",
    "Progress",
    "Queued",
    "Started",
    "Succeeded",
    "event_from_dict",
    "is_out_of_memory",
    "open_durable_store",
]
