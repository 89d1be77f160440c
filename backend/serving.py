"""The generation engines as a Ray Serve deployment: one replica per GPU, across nodes.

Each replica holds one JobRunner (its models stay resident) and runs one job at a time
(`max_ongoing_requests=1`), as the local server's queue does. Jobs waiting for a replica queue in
Serve's router, bounded by `max_queued`: past it a call fails at once with
`BackPressureError`, which the HTTP layer answers with 429, like a full local queue. A call is a
stream (`EngineReplica.stream`): the job's progress items, then its answer. Cancelling it
(`DeploymentResponseGenerator.cancel()`) sets the job's cancel event, so the engine stops at its
next step and the job ends with the `cancelled` code, exactly as a local cancel does.

The HTTP API runs on it with `python -m backend serve --http HOST:PORT --cluster ray[:ADDRESS]`:
its `JobService` keeps its own queue, limits and events, and `ServeQueue` hands each admitted
job to a replica, at most one per replica at a time, so queued jobs wait (and are cancelled) in
the front door's queue. A request is the image's bytes plus the job's settings and the answer
carries the GLB's bytes, so replicas on other nodes need no shared disk.
"""
from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from shared.errors import BackendError

from .context import JobContext, JobResult
from .job_queue import JobQueue
from .jobs import JobRunner, Pending, make_scratch, make_spec, remove_scratch


APP = "step1x3d"  # the Serve application's name on a cluster, shared by every front door


@dataclass(frozen=True)
class GenerateRequest:
    image: bytes  # the reference image file's bytes (PNG, JPEG, ...)
    image_name: str = "image.png"
    engine: str = "auto"
    settings: dict | None = None
    job_id: str | None = None
    mesh: bytes | None = None  # a mesh file to texture instead of generating geometry
    mesh_name: str = "mesh.glb"  # its suffix tells the format


def _file_name(name: str, default: str) -> str:
    """A request's file name as a plain name in the scratch folder (never a path out of it)."""
    base = Path(name).name
    return base if base not in ("", ".", "..") else default


class EngineReplica:
    """The deployment's body (kept free of Serve so it is testable alone)."""

    def __init__(self, runner_options: dict | None = None):
        self.runner = JobRunner(**(runner_options or {}))
        self.pid = os.getpid()
        self.finished: dict[str, str] = {}  # job id -> "ok" or the error code, for status pages and tests

    def _run(self, request: GenerateRequest, ctx: JobContext) -> dict:
        t0 = time.perf_counter()
        try:
            result = self.runner.run(ctx)
            self.finished[ctx.spec.job_id] = "ok"
            return {"ok": True, "job_id": ctx.spec.job_id, "glb": Path(result.path).read_bytes(),
                    "metadata": result.metadata, "replica_pid": self.pid, "seconds": round(time.perf_counter() - t0, 3)}
        except BackendError as exc:
            self.finished[ctx.spec.job_id] = exc.code
            return {"ok": False, "job_id": ctx.spec.job_id, "code": exc.code, "message": exc.message,
                    "replica_pid": self.pid}

    async def stream(self, request: GenerateRequest):
        """The job's progress as it runs (`{"progress": [stage, step, total, message]}` items), then
        its answer: what the front door relays as the job's own progress events."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        work = make_scratch()
        try:
            image = work / _file_name(request.image_name, "image.png")
            image.write_bytes(request.image)
            mesh = None
            if request.mesh is not None:
                mesh = work / "mesh" / _file_name(request.mesh_name, "mesh.glb")  # apart: names may clash
                mesh.parent.mkdir()
                mesh.write_bytes(request.mesh)
            try:
                spec = make_spec(image=str(image), mesh=None if mesh is None else str(mesh),
                                 output=str(work / "out" / "model.glb"), engine=request.engine,
                                 settings=request.settings, job_id=request.job_id)
            except BackendError as exc:
                yield {"ok": False, "job_id": request.job_id, "code": exc.code, "message": exc.message,
                       "replica_pid": self.pid}
                return

            def progress(stage: str, step: int, total: int, message: str) -> None:  # on the job's thread
                loop.call_soon_threadsafe(events.put_nowait, {"progress": [stage, step, total, message]})

            ctx = JobContext(spec=spec, work_dir=work / "job", on_progress=progress)
            ctx.work_dir.mkdir()
            job = loop.run_in_executor(None, self._run, request, ctx)
            job.add_done_callback(lambda _: events.put_nowait(None))  # after every progress item
            try:
                while (item := await events.get()) is not None:
                    yield item
                yield job.result()
            except (asyncio.CancelledError, GeneratorExit):  # cancelled, or the caller stopped reading
                ctx.cancel_event.set()  # the engine raises `cancelled` at its next step
                await asyncio.wait([job])  # the scratch folder goes only once the job let go of it
                raise
        finally:
            remove_scratch(work)

    def outcomes(self) -> tuple[int, dict[str, str]]:
        return self.pid, dict(self.finished)


def deployment(num_replicas: int, gpus_per_replica: float, max_queued: int, cpus_per_replica: float = 1.0):
    """The Serve deployment class with its limits."""
    from ray import serve

    return serve.deployment(EngineReplica, name="engines", num_replicas=num_replicas, max_ongoing_requests=1,
                            max_queued_requests=max_queued,
                            ray_actor_options={"num_gpus": gpus_per_replica, "num_cpus": cpus_per_replica})


class ServeEngines:
    """What the HTTP layer calls instead of its local queue."""

    def __init__(self, handle, replicas: int = 1):
        self.handle, self.replicas = handle, replicas

    def stream(self, request: GenerateRequest):
        """The job's progress items, then its answer, as a response generator."""
        return self.handle.options(method_name="stream", stream=True).remote(request)

    @staticmethod
    def is_full(exc: BaseException) -> bool:
        """Whether a failed submit means 'every replica busy and the queue full' (answer 429)."""
        return type(exc).__name__ == "BackPressureError"


def start(num_replicas: int | None = None, max_queued: int = 8, runner_options: dict | None = None,
          address: str | None = None) -> ServeEngines:
    """Deploy the engines on the Ray cluster at `address` (or a local one): by default one replica
    per GPU, or one CPU replica when the cluster has none. Serve's own HTTP proxy stays off: the
    backend's API is the only door."""
    import ray
    from ray import serve

    from shared.raypool import connect

    connect(address)
    serve.start(proxy_location="Disabled")
    running = _running_replicas(serve.status())
    if running:  # another front door deployed it: share its replicas (deploying again would restart them mid-job)
        print(f"joined the running Ray Serve app {APP!r} ({running} replicas; its own weights and plan options apply)",
              file=sys.stderr, flush=True)
        return ServeEngines(serve.get_app_handle(APP), running)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    replicas = num_replicas or max(1, gpus)
    app = deployment(replicas, 1.0 if gpus else 0.0, max_queued, cpus_per_replica=0.0 if gpus else 1.0)
    handle = serve.run(app.bind(runner_options), name=APP, route_prefix=None, blocking=False)
    return ServeEngines(handle, replicas)


def _running_replicas(status) -> int:
    """Replicas of the engines deployment in a running app named APP; 0 if there is none."""
    app = status.applications.get(APP)
    if app is None or app.status != "RUNNING" or "engines" not in app.deployments:
        return 0
    states = app.deployments["engines"].replica_states
    return int(sum(n for state, n in states.items() if str(getattr(state, "value", state)) == "RUNNING"))


class ServeRunner:
    """`JobQueue`'s runner on Serve replicas: a job runs whole on one replica (no local engines),
    whose progress events are relayed as the job's own, between one as the job is sent and one as
    its GLB is back."""

    def __init__(self, engines: ServeEngines, poll_seconds: float = 0.2):
        self.engines, self.poll_seconds = engines, poll_seconds

    def start(self, ctx: JobContext) -> Pending:
        return Pending(time.perf_counter(), result=self._run(ctx))

    def finish(self, ctx: JobContext, pending: Pending, device: str | None = None) -> JobResult:
        return pending.result

    def _run(self, ctx: JobContext) -> JobResult:
        from ray.serve.exceptions import RequestCancelledError

        spec = ctx.spec
        ctx.step("cluster", 0, 1, "sent to a Ray Serve replica")
        mesh = {} if spec.mesh is None else {"mesh": spec.mesh.read_bytes(), "mesh_name": spec.mesh.name}
        request = GenerateRequest(spec.image.read_bytes(), image_name=spec.image.name, engine=spec.engine,
                                  settings=spec.settings, job_id=spec.job_id, **mesh)
        ended = threading.Event()
        answer: dict = {}
        try:
            response = self.engines.stream(request)

            def watch() -> None:  # reading the stream blocks: a cancel is passed on from here
                while not ended.wait(self.poll_seconds):
                    if ctx.cancel_event.is_set():
                        response.cancel()  # the replica stops its engine at the next step
                        return

            threading.Thread(target=watch, name=f"serve-cancel-{spec.job_id}", daemon=True).start()
            for item in response:
                if "progress" in item:
                    ctx.on_progress(*item["progress"])
                else:
                    answer = item
        except RequestCancelledError:
            raise BackendError("cancelled", f"job {spec.job_id} was cancelled") from None
        except Exception as exc:  # noqa: BLE001 - every cluster failure becomes a coded error
            if self.engines.is_full(exc):
                raise BackendError("queue_full", "every engine replica is busy and their queue is full; retry later") from None
            raise BackendError("backend_unavailable", f"the Ray Serve replica failed: {exc}") from None
        finally:
            ended.set()
        if not answer.get("ok"):
            raise BackendError(answer.get("code", "backend_unavailable"),
                               answer.get("message", "the Ray Serve replica ended without an answer"))
        spec.output.parent.mkdir(parents=True, exist_ok=True)
        temp = spec.output.with_name(f".{spec.output.name}.{os.getpid()}.part")
        temp.write_bytes(answer["glb"])
        os.replace(temp, spec.output)  # never a half GLB under the result's name
        ctx.on_progress("cluster", 1, 1, f"done on replica pid {answer['replica_pid']}")
        return JobResult(spec.output, answer["metadata"])


class ServeQueue(JobQueue):
    """`JobService`'s executor on Serve: the same FIFO, cancel and close as the local queue, with
    one lane per replica, so each replica runs one job and the rest wait (and are cancelled) here."""

    def __init__(self, engines: ServeEngines, hooks):
        super().__init__(ServeRunner(engines), hooks)
        self.replicas = engines.replicas

    def run(self) -> None:
        lanes = [threading.Thread(target=self._lane, kwargs={"starts": True, "slot": None}, daemon=True,
                                  name=f"serve-lane-{i}") for i in range(1, self.replicas)]
        for lane in lanes:
            lane.start()
        self._lane(starts=True, slot=None)
        for lane in lanes:
            lane.join()
