"""The `--cluster` choice and a pool of Ray actors that keep their expensive state alive.

`local` runs a tool's own process pool; `ray` starts or joins a local Ray instance (`ray.init()`
joins the one named by RAY_ADDRESS or a running `ray start`, else starts one) and `ray:ADDRESS`
joins a cluster. Each actor builds one worker from a dotted name (`module:Class`) once, so a
bpy worker keeps Blender loaded and a GPU worker keeps its models resident, and then runs item
after item. One item is in flight per actor: the driver's bound on in-flight work is the number
of actors. A killed actor is restarted by Ray (its constructor runs again); the item it was
running comes back as `worker_crashed` and the driver retries it.

Why this lives in shared/: blender_render and backend may not import each other and both need
the same actor pool; a copy in each would be a twin. Ray is imported inside the functions that
use it, never at module import, so shared/ stays importable with the standard library alone and
the add-on, which vendors shared/, never touches Ray.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Hashable

from .batchrun import failure
from .errors import BackendError
from .jobs import Task

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Cluster:
    kind: str  # local | ray
    address: str | None = None  # ray: None starts or joins a local instance

    @classmethod
    def parse(cls, text: str) -> "Cluster":
        kind, _, address = str(text).partition(":")
        if kind not in ("local", "ray") or (kind == "local" and address):
            raise BackendError("invalid_setting", f"--cluster must be local, ray or ray:ADDRESS, got {text!r}")
        return cls(kind, address or None)


def add_cluster_argument(parser) -> None:
    parser.add_argument("--cluster", default="local", metavar="local|ray[:ADDRESS]",
                        help="local: this machine's process pool; ray: start or join a local Ray instance; "
                             "ray:ADDRESS: join a Ray cluster (actors keep their state loaded)")


def build_worker(factory: str, kwargs: dict):
    module, _, name = factory.partition(":")
    return getattr(importlib.import_module(module), name)(**kwargs)


class _Host:
    """The actor body: one worker object, called once per item."""

    def __init__(self, factory: str, kwargs: dict):
        self.worker = build_worker(factory, kwargs)

    def run(self, item: Task) -> dict:
        return self.worker(item)

    def pid(self) -> int:
        return os.getpid()


def connect(address: str | None, num_cpus: int | None = None) -> None:
    """Start or join Ray once per process; workers find this repository through PYTHONPATH."""
    import ray

    if ray.is_initialized():
        return
    env = {"PYTHONPATH": os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)}
    # a local instance listens on loopback only; a cluster's address says where its head is
    local = {"num_cpus": num_cpus, "_node_ip_address": "127.0.0.1"} if address is None else {}
    ray.init(address=address, include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=False, **local)


class RayPool:
    """`actors` actors of `factory(**kwargs)` (or of `kwargs[i]` for actor i), each reserving
    `num_cpus` / `num_gpus`."""

    def __init__(self, factory: str, kwargs: dict | list[dict], actors: int, *, address: str | None = None,
                 num_cpus: float = 1, num_gpus: float = 0, max_restarts: int = -1):
        import ray

        connect(address)
        if actors < 1:
            raise ValueError("a Ray pool needs at least one actor")
        remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=max_restarts,
                            max_task_retries=0)(_Host)
        per_actor = kwargs if isinstance(kwargs, list) else [kwargs] * actors
        self.actors = [remote.remote(factory, per_actor[i]) for i in range(actors)]
        self._idle = list(range(actors))
        self._running: dict = {}  # object ref -> actor index
        self._pings: dict = {}  # ping ref -> index of an actor Ray is restarting
        self._dead: set[int] = set()

    @property
    def capacity(self) -> int:
        """Actors that can take an item now or soon (a restarting one comes back after its ping)."""
        return len(self.actors) - len(self._dead) - len(self._pings)

    def submit(self, item: Task) -> Hashable:
        index = self._idle.pop()
        ref = self.actors[index].run.remote(item)
        self._running[ref] = index
        return ref

    def _ping(self, index: int) -> None:
        self._pings[self.actors[index].pid.remote()] = index

    def wait(self) -> list[tuple[Hashable, dict]]:
        """Results of finished items; an actor that died is pinged until Ray has restarted it and
        only then takes work again, so a retry never lands on an actor that is still down."""
        import ray
        from ray.exceptions import ActorDiedError, RayActorError, RayError

        out = []
        while not out:
            if not self._running:
                raise RuntimeError("no item in flight")
            ready, _ = ray.wait([*self._running, *self._pings], num_returns=1)
            for ref in ready:
                if ref in self._pings:
                    index = self._pings.pop(ref)
                    try:
                        ray.get(ref)
                        self._idle.append(index)
                    except ActorDiedError:  # out of restarts: the pool shrinks
                        self._dead.add(index)
                        if len(self._dead) == len(self.actors):
                            raise BackendError("internal_error", "every Ray actor of the pool died (a worker "
                                                                 "that cannot start: see the Ray logs)") from None
                    except RayActorError:
                        self._ping(index)
                    continue
                index = self._running.pop(ref)
                try:
                    out.append((ref, ray.get(ref)))
                    self._idle.append(index)
                except RayActorError as exc:
                    out.append((ref, failure("worker_crashed", f"Ray actor died: {str(exc).splitlines()[0][:300]}")))
                    self._ping(index)
                except RayError as exc:
                    out.append((ref, failure("internal_error", f"{type(exc).__name__}: {str(exc)[:300]}")))
                    self._idle.append(index)
        return out

    def pids(self) -> list[int]:
        import ray

        return ray.get([a.pid.remote() for a in self.actors])

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []

    kill = close
