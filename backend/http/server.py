"""`python -m backend serve --http HOST:PORT` and `python -m backend web`: uvicorn on the main
thread, the job loop of a `JobService` on another, the API and (unless turned off) the web page on
one FastAPI app."""
from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from shared.errors import BackendError

from ..jobs import JobRunner
from ..service import JobService
from .app import ApiContext, Limits, create_app
from .book import JobBook
from .security import Tokens, check_bind, load_tokens
from .store import ResultStore

DEFAULT_DATA = Path.home() / ".cache" / "step1x3d" / "server"


@dataclass
class HttpOptions:
    host: str = "127.0.0.1"
    port: int = 8188
    data_dir: Path = DEFAULT_DATA
    token_file: str | None = None
    limits: Limits = field(default_factory=Limits)
    keep_hours: float = 24.0
    keep_gb: float = 5.0
    sweep_seconds: float = 60.0
    web: bool = True
    default_engine: str = "auto"


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise BackendError("invalid_request", f"--http wants HOST:PORT (like 127.0.0.1:8188), got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def cached(fn: Callable[[], dict[str, Any]], seconds: float = 10.0) -> Callable[[], dict[str, Any]]:
    """`backend info` probes GPUs and the weights cache: once per `seconds` is plenty."""
    memo: dict[str, Any] = {}
    lock = threading.Lock()

    def call() -> dict[str, Any]:
        with lock:
            if "at" not in memo or time.monotonic() - memo["at"] > seconds:
                memo["value"], memo["at"] = fn(), time.monotonic()
            return memo["value"]

    return call


def build(options: HttpOptions, runner: JobRunner, executor: Callable[[JobService], Any] | None = None):
    """The app and its job service (not started): tests and the web page's own launcher use it.
    `executor`: what runs the jobs instead of the local queue (JobService's seam)."""
    from ..cli import info_data

    tokens = load_tokens(options.token_file)
    check_bind(options.host, tokens)
    store = ResultStore(options.data_dir, keep_seconds=options.keep_hours * 3600,
                        budget_bytes=int(options.keep_gb * (1 << 30)))
    book = JobBook(store)
    service = JobService(runner, book.sink, default_engine=options.default_engine,
                         max_jobs=options.limits.max_jobs, executor=executor)
    plan = runner.plan_options
    ctx = ApiContext(service=service, book=book, tokens=Tokens(tokens), limits=options.limits,
                     info=cached(lambda: info_data(runner.weights, plan["plan"], plan["geometry_gpu"],
                                                   plan["texture_gpu"], plan["offload"])),
                     sweep_seconds=options.sweep_seconds)
    app = create_app(ctx)
    if options.web:
        try:
            from .web import mount
        except ImportError as exc:  # the page's library is missing: the API still serves
            logging.getLogger(__name__).warning("web page off: %s", exc)
        else:
            mount(app, ctx)
    return app, ctx


def serve_http(options: HttpOptions, runner: JobRunner, executor: Callable[[JobService], Any] | None = None) -> int:
    import uvicorn

    app, ctx = build(options, runner, executor)
    jobs = threading.Thread(target=ctx.service.run, name="job-loop", daemon=True)
    jobs.start()
    where = f"http://{options.host}:{options.port}"
    print(f"serving the API at {where}/v1 and {'the page at ' + where + '/' if options.web else 'no web page'}; "
          f"results in {options.data_dir}", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, host=options.host, port=options.port, log_level="warning",
                            timeout_graceful_shutdown=3, lifespan="on")
    try:
        uvicorn.Server(config).run()
    finally:
        ctx.service.stop()
        jobs.join(timeout=30)
    return 0
