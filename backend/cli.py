"""`python -m backend generate|serve|info|download|prepare-image`.

Flags for every generation setting come from shared/settings.py, so the CLI, the server and the
Blender panel can never disagree on names, defaults or ranges. Exit status: 0 on success, else
the failing error code's status (shared/errors.py), 130 on Ctrl-C; a batch of several inputs
exits 0 when all were written and `batch_incomplete` (21) when any failed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shared import settings as settings_schema
from shared.cli import report_error, run_command
from shared.errors import CODES, BackendError
from shared.protocol import ENGINES
from shared.raypool import Cluster, add_cluster_argument

from .context import JobContext, JobResult, JobSpec
from .jobs import make_scratch, remove_scratch
from .progress import ProgressBar

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("generation settings (shared/settings.py)")
    for s in settings_schema.SETTINGS:
        flag = "--" + s.name.replace("_", "-")
        limits = ""
        if s.choices:
            limits = f" ({'|'.join(s.choices)})"
        elif s.minimum is not None:
            limits = f" ({s.minimum:g}..{s.maximum:g})"
        help_text = f"{s.help}{limits}; default {s.default!r}"
        if s.type is bool:
            group.add_argument(flag, dest=s.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            group.add_argument(flag, dest=s.name, default=None, metavar=s.type.__name__.upper(), help=help_text)


def _add_plan_flags(parser: argparse.ArgumentParser) -> None:
    from .runtime.plan import OFFLOAD, PLANS

    group = parser.add_argument_group("device plan (step1x3d engine)")
    group.add_argument("--plan", choices=PLANS, default="auto",
                       help="single GPU; two GPUs: multi (geometry and texture apart, jobs pipelined: throughput of "
                            "many jobs) or split (each guided step halved across them: latency of one job); cpu; "
                            "auto picks by GPU count")
    group.add_argument("--geometry-gpu", type=int, help="CUDA index for the geometry stage")
    group.add_argument("--texture-gpu", type=int, help="CUDA index for the texture stage (multi) or the second "
                                                       "half of each guided step (split)")
    group.add_argument("--offload", choices=OFFLOAD, default="auto",
                       help="single plan: keep both stages resident when they fit (auto), else move idle models "
                            "to host memory (cpu) or free them (release); none never offloads")


def _runner(args: argparse.Namespace):
    from .jobs import JobRunner

    return JobRunner(weights=args.weights, plan=args.plan, geometry_gpu=args.geometry_gpu,
                     texture_gpu=args.texture_gpu, offload=args.offload)


def _add_http_flags(parser: argparse.ArgumentParser, with_address: bool) -> None:
    group = parser.add_argument_group("HTTP API and web page (backend/http)")
    if with_address:
        group.add_argument("--http", metavar="HOST:PORT",
                           help="serve the HTTP API and web page instead of JSON lines on stdin/stdout; "
                                "any address but loopback needs --token-file or STEP1X3D_TOKENS")
    group.add_argument("--token-file", help="file of access tokens, one a line (also: STEP1X3D_TOKENS)")
    group.add_argument("--data-dir", help="where uploads and results are kept (default ~/.cache/step1x3d/server)")
    group.add_argument("--max-jobs", type=int, default=16, help="queued plus running jobs; more get 429")
    group.add_argument("--max-image-mb", type=float, default=32, help="largest image upload")
    group.add_argument("--max-mesh-mb", type=float, default=128, help="largest mesh upload")
    group.add_argument("--keep-hours", type=float, default=24, help="how long finished results are kept")
    group.add_argument("--keep-gb", type=float, default=5, help="disk budget of kept results (oldest go first)")
    group.add_argument("--sweep-seconds", type=float, default=60, help="how often expired results are removed")
    group.add_argument("--no-web", action="store_true", help="the API only, no web page at /")


def cmd_http(args: argparse.Namespace, host: str, port: int) -> int:
    from .http.app import Limits
    from .http.server import DEFAULT_DATA, HttpOptions, serve_http

    options = HttpOptions(
        host=host, port=port, data_dir=Path(args.data_dir).expanduser() if args.data_dir else DEFAULT_DATA,
        token_file=args.token_file, keep_hours=args.keep_hours, keep_gb=args.keep_gb,
        sweep_seconds=args.sweep_seconds, web=not args.no_web, default_engine=args.engine,
        limits=Limits(image_bytes=int(args.max_image_mb * (1 << 20)), mesh_bytes=int(args.max_mesh_mb * (1 << 20)),
                      max_jobs=args.max_jobs))
    return serve_http(options, _runner(args), _serve_executor(args))


def _serve_executor(args: argparse.Namespace):
    """`--cluster ray[:ADDRESS]`: the jobs run on Ray Serve replicas, one per GPU (backend/serving.py)."""
    where = Cluster.parse(getattr(args, "cluster", "local"))
    if where.kind == "local":
        return None
    from .serving import ServeQueue, start

    engines = start(max_queued=args.max_jobs, address=where.address,
                    runner_options={"weights": args.weights, "offload": args.offload})
    return lambda service: ServeQueue(engines, service)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m backend", description="Step1X-3D backend: image to textured GLB")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="turn images (or a folder of images) into textured GLBs")
    gen.add_argument("inputs", nargs="*", help="image files or folders of images")
    gen.add_argument("-o", "--output", help="output .glb (one input) or folder (several inputs); default ./out/")
    gen.add_argument("--mesh", help="texture this mesh (glb/obj/ply/stl) instead of generating geometry")
    gen.add_argument("--engine", choices=ENGINES, default="auto", help="auto picks step1x3d with a GPU and weights")
    gen.add_argument("--weights", help="folder or hub id of the Step1X-3D weights (default: the hub cache)")
    gen.add_argument("--json", action="store_true", help="print one JSON result line per job on stdout")
    add_cluster_argument(gen)  # ray: one actor per GPU keeps its models; -o is then a folder or URL
    _add_setting_flags(gen)
    _add_plan_flags(gen)

    srv = sub.add_parser("serve", help="JSON-lines server on stdin/stdout (used by the Blender add-on)")
    srv.add_argument("--engine", choices=ENGINES, default="auto", help="default engine for requests that name none")
    srv.add_argument("--weights", help="folder or hub id of the Step1X-3D weights")
    _add_plan_flags(srv)

    _add_http_flags(srv, with_address=True)
    add_cluster_argument(srv)  # with --http, ray: the jobs run on Ray Serve replicas, one per GPU
    web = sub.add_parser("web", help="the web page and HTTP API on this computer (loopback only)")
    web.add_argument("--port", type=int, default=8188, help="port on 127.0.0.1 (default 8188)")
    web.add_argument("--engine", choices=ENGINES, default="auto", help="default engine of the page's jobs")
    web.add_argument("--weights", help="folder or hub id of the Step1X-3D weights")
    _add_plan_flags(web)
    _add_http_flags(web, with_address=False)
    add_cluster_argument(web)  # ray: the page's jobs run on Ray Serve replicas, one per GPU

    info = sub.add_parser("info", help="engines, GPUs and where weights were found")
    info.add_argument("--weights", help="folder or hub id to look in")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    _add_plan_flags(info)

    dl = sub.add_parser(
        "download", help="download model weights into the Hugging Face cache",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fetch the files the chosen components read into the Hugging Face cache (HF_HOME), "
                    "resuming partial files.\nExit status 0 when every asked component is complete, "
                    "10 (weights_not_found) naming what is still missing,\n15 (disk_full) before starting "
                    "when the files would not fit.",
        epilog="--json prints one JSON object per line on stdout (the Blender add-on reads these):\n"
               '  {"event": "start", "files": N, "total_bytes": B, "components": [...]}\n'
               '  {"event": "progress", "file": "org/repo/path", "bytes": b, "total": t, "done_bytes": d, '
               '"total_bytes": B}\n'
               '  {"event": "done", "weights": {"root": ..., "found": {...}, "missing": [], "incomplete": {}}}\n'
               '  {"event": "error", "code": "weights_not_found|disk_full|invalid_request", "message": ...}\n'
               "Without --json a progress line (percentage, bytes, file, ETA) goes to stderr.")
    dl.add_argument("components", nargs="*",
                    help="components to fetch (default: what --model and --no-texture need): "
                         "geometry-base, geometry-label, texture-adapter, sdxl-base, sdxl-vae, "
                         "background-remover (the BiRefNet file, also fetched by a download of the defaults)")
    dl.add_argument("--weights", help="hub id of the Step1X-3D repo (default stepfun-ai/Step1X-3D or $STEP1X3D_WEIGHTS); "
                                      "with a local folder only the SDXL components are fetched")
    dl.add_argument("--model", choices=("base", "label"), default=settings_schema.BY_NAME["model"].default,
                    help="which geometry model to fetch")
    dl.add_argument("--no-texture", action="store_true", help="skip the texture models (untextured meshes only)")
    dl.add_argument("--json", action="store_true", help="one JSON event per line on stdout (see below)")
    _add_prepare_image_parser(sub)
    return parser


def _expand_inputs(inputs: list[str]) -> list[Path]:
    paths: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            paths.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES))
        else:
            paths.append(p)
    return paths


def _output_for(args: argparse.Namespace, image: Path, many: bool) -> str | None:
    if not args.output:
        return None
    if many:
        return str(Path(args.output) / f"{image.stem}.glb")
    return args.output


class _BatchReport:
    """Job hooks for `generate`: a progress bar per job on stderr, a JSON line per job on stdout,
    and a note when the engine ignored a setting the user gave."""

    def __init__(self, as_json: bool, redraw: bool, given: tuple[str, ...] = ()):
        self.as_json, self.redraw, self.given = as_json, redraw, given
        self.failures, self.last_status = 0, 0
        self._bars: dict[int, ProgressBar] = {}

    def fail(self, name: str, err: BackendError) -> None:
        self.failures += 1
        self.last_status = err.exit_status
        report_error(err)
        if self.as_json:
            print(json.dumps({"input": name, "ok": False, "code": err.code, "message": err.message}), flush=True)

    def begin(self, job: tuple[str, JobSpec]) -> JobContext:
        name, spec = job
        bar = self._bars[id(job)] = ProgressBar(sys.stderr, label=Path(name).name, redraw=self.redraw)
        return JobContext(spec=spec, work_dir=make_scratch(), on_progress=bar.update)

    def end(self, job: tuple[str, JobSpec], ctx: JobContext, outcome: JobResult | BackendError) -> None:
        remove_scratch(ctx.work_dir)
        self._bars.pop(id(job)).close()
        name = job[0]
        if isinstance(outcome, BackendError):
            self.fail(name, outcome)
            return
        seconds = outcome.metadata.get("seconds", 0.0)
        print(f"wrote {outcome.path} ({outcome.metadata.get('engine')}, {seconds:.1f} s)", file=sys.stderr)
        unused = [n for n in self.given if n in outcome.metadata.get("ignored_settings", {})]
        if unused:
            flags = ", ".join("--" + n.replace("_", "-") for n in unused)
            print(f"note: the {outcome.metadata.get('engine')} engine did not use {flags}", file=sys.stderr)
        if self.as_json:
            print(json.dumps({"input": name, "ok": True, "path": str(outcome.path), "metadata": outcome.metadata}),
                  flush=True)


def cmd_generate(args: argparse.Namespace) -> int:
    from .job_queue import JobQueue
    from .jobs import make_spec

    overrides = {s.name: getattr(args, s.name) for s in settings_schema.SETTINGS if getattr(args, s.name) is not None}
    images = _expand_inputs(args.inputs)
    if args.cluster != "local":
        return _generate_on_cluster(args, images, overrides)
    if not images:
        raise BackendError("invalid_request", "give an image (or a folder of images); a --mesh is textured from one")
    many = len(images) > 1
    runner = _runner(args)
    pipelined = runner.pipelined() and many
    report = _BatchReport(args.json, redraw=not pipelined, given=tuple(overrides))  # two jobs at once: log lines
    queue = JobQueue(runner, report, pipelined=pipelined)
    for image in images:
        name = str(image)
        try:
            queue.put((name, make_spec(image=name, mesh=args.mesh,
                                       output=_output_for(args, image, many), engine=args.engine, settings=overrides)))
        except BackendError as err:
            report.fail(name, err)
    queue.close()
    try:
        queue.run()
    finally:
        runner.close()
    if report.failures == 0:
        return 0
    if not many:
        return report.last_status
    print(f"{len(images) - report.failures} of {len(images)} succeeded", file=sys.stderr)
    return CODES["batch_incomplete"].exit_status


def _generate_on_cluster(args: argparse.Namespace, images: list[Path], overrides: dict) -> int:
    """Images to GLBs in OUTPUT (a folder or URL) on Ray, resumable (backend/cluster.py)."""
    from .cluster import generate_batch

    where = Cluster.parse(args.cluster)
    if args.mesh or not images:
        raise BackendError("invalid_request", "--cluster runs images (files or folders), not --mesh")
    runner = {"weights": args.weights, "plan": args.plan, "geometry_gpu": args.geometry_gpu,
              "texture_gpu": args.texture_gpu, "offload": args.offload}
    counts = generate_batch([str(i) for i in images], args.output or "out", args.engine, overrides, runner,
                            where.address)
    print(json.dumps(counts))
    return CODES["batch_incomplete"].exit_status if counts["failed"] else 0


def info_data(weights: str | None, plan: str = "auto", geometry_gpu: int | None = None,
              texture_gpu: int | None = None, offload: str = "auto") -> dict:
    """What `info --json` prints (the HTTP API's /v1/info answers the same)."""
    return _gather_info(weights, plan, geometry_gpu, texture_gpu, offload)[0]


def _gather_info(weights: str | None, plan: str, geometry_gpu: int | None, texture_gpu: int | None,
                 offload: str) -> tuple:
    """(info_data's dict, the GPUs, the weights status): the devices are queried and the weights'
    files checked once, for both the JSON and the text form."""
    from .runtime.devices import cuda_devices
    from .runtime.weights import find_weights

    from . import engines
    from .runtime.plan import make_plan, plan_choices

    gpus = cuda_devices()
    try:
        auto = engines.choose("auto", weights, plan=plan)
        auto_text = f"{auto.name} ({auto.reason})"
    except BackendError as err:
        auto_text = f"unavailable: {err.message}"
    try:
        plan_text = make_plan(plan, gpus, settings_schema.defaults(), geometry_gpu=geometry_gpu,
                              texture_gpu=texture_gpu, offload=offload).describe()
    except BackendError as err:
        plan_text = f"refused: {err.message}"
    found = find_weights(weights)
    choices = plan_choices(gpus, settings_schema.defaults(), geometry_gpu=geometry_gpu, texture_gpu=texture_gpu,
                           offload=offload)
    data = {
        "engines": list(ENGINES[1:]),
        "auto": auto_text,
        "plan": plan_text,
        "plans": [vars(c) for c in choices],
        "gpus": [vars(g) for g in gpus],
        "weights": found.as_dict(),
        "background_remover": _remover_info(),
        "python": sys.version.split()[0],
    }
    return data, gpus, found


def cmd_info(args: argparse.Namespace) -> int:
    data, gpus, weights = _gather_info(args.weights, args.plan, args.geometry_gpu, args.texture_gpu, args.offload)
    auto_text, plan_text = data["auto"], data["plan"]
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"engines: {', '.join(data['engines'])}; auto -> {auto_text}")
    print("GPUs: " + ("; ".join(g.describe() for g in gpus) if gpus else "none (CPU only)"))
    print(f"device plan: {plan_text}")
    print("plans (--plan; auto picks single on one GPU, multi on two):")
    for c in data["plans"]:
        print(f"  {c['kind']:<7}{'fits' if c['fits'] else 'refused':<9}{c['goal']}: {c['detail']}")
    print(f"weights: {weights.describe()}")
    for name, path in weights.found.items():
        print(f"  {name}: {path}")
    for f in data["background_remover"]:
        print(f"background remover: {f['name']} {'at ' + f['path'] if f['present'] else 'not downloaded'}"
              + ("" if f["present"] else " (the GrabCut fallback is used; `python -m backend download` fetches it)"))
    return 0


def _remover_info() -> list[dict]:
    from .background import remover_model_files

    return [{"name": f.name, "path": str(f.path), "present": f.present} for f in remover_model_files()]


def cmd_download(args: argparse.Namespace) -> int:
    from .progress import DownloadProgress
    from .runtime.weights import download, required_components

    emit = (lambda event: print(json.dumps(event), flush=True)) if args.json else DownloadProgress(sys.stderr)
    try:
        hub = _download_remover(args.components)
        if hub is None:  # only the remover was asked for
            return 0
        components = hub or required_components({"model": args.model, "texture": not args.no_texture}, True)
        status = download(components, args.weights, on_event=emit)
    except BackendError as err:
        if args.json:
            emit({"event": "error", "code": err.code, "message": err.message})
        raise
    if args.json:
        emit({"event": "done", "weights": status.as_dict()})
    else:
        print(f"{', '.join(components)}: complete under {status.root}", file=sys.stderr)
    return 0


def _download_remover(components: list[str]) -> list[str] | None:
    """Fetch the background remover's model file when `components` is empty (the defaults) or names
    it; returns the components left for the hub download (None: nothing left). Among the defaults it
    is optional (photos fall back to GrabCut), so a failure there is a warning; asked for by name it
    is an error."""
    from .background import REMOVER_COMPONENT, download_model, remover_model_files

    if components and REMOVER_COMPONENT not in components:
        return components
    rest = [c for c in components if c != REMOVER_COMPONENT]
    # stderr, like pooch's progress bar: stdout stays the download's own report (the add-on parses it)
    have = remover_model_files()[0]
    try:
        print(f"background remover: {(have if have.present else download_model()).describe()}", file=sys.stderr)
    except BackendError as err:
        if components:
            raise
        print(f"warning: background remover not downloaded ({err.message}); photos without alpha use the "
              "GrabCut fallback", file=sys.stderr)
    return None if components and not rest else rest


def _add_prepare_image_parser(sub) -> None:
    prep = sub.add_parser("prepare-image", help="write the cut-out (framed RGBA) the models will see, before generating")
    prep.add_argument("image", help="the reference image")
    prep.add_argument("-o", "--output", required=True, help="PNG to write the cut-out to")
    prep.add_argument("--checker", help="also write the cut-out over a checkerboard to this PNG")
    prep.add_argument("--device", default="cuda:0", help="where a model remover runs when onnxruntime can use it "
                                                         "(cuda:N), else the CPU; default cuda:0")
    prep.add_argument("--json", action="store_true", help="print the result as one JSON line")
    for name in ("remove_background", "foreground_ratio"):
        spec = next(s for s in settings_schema.SETTINGS if s.name == name)
        prep.add_argument("--" + name.replace("_", "-"), dest=name, default=None,
                          help=f"{spec.help}; default {spec.default!r}")


def cmd_prepare_image(args: argparse.Namespace) -> int:
    from .cutout_preview import write_cutout

    overrides = {k: getattr(args, k) for k in ("remove_background", "foreground_ratio") if getattr(args, k) is not None}
    result = write_cutout(args.image, args.output, overrides, checker=args.checker, device=args.device)
    print(json.dumps(result.as_dict()) if args.json else result.describe())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: _dispatch(args))


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "generate":
        return cmd_generate(args)
    if args.command == "serve" and args.http:
        from .http.server import parse_address

        return cmd_http(args, *parse_address(args.http))
    if args.command == "web":
        return cmd_http(args, "127.0.0.1", args.port)
    if args.command == "serve":
        from .server import serve

        if Cluster.parse(args.cluster).kind != "local":
            raise BackendError("invalid_request", "--cluster ray serves the HTTP API: add --http HOST:PORT")

        return serve(default_engine=args.engine, runner=_runner(args))
    if args.command == "info":
        return cmd_info(args)
    if args.command == "prepare-image":
        return cmd_prepare_image(args)
    return cmd_download(args)

