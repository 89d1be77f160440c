"""Geometry training data: normalise, make watertight, sample; one .npz per object, resumable.

    python -m backend.data.prepare MESH_OR_LIST OUTDIR [--resolution 256] [--workers N] ...

MESH_OR_LIST is a mesh file, a folder (searched recursively) or a list file (one path per line
or a JSON array), as for `blender_render.batch`; objects get the same ids there and here
(`shared.jobs.object_id`), so `OUTDIR/<id>.npz` pairs with the renders `RENDERS/<id>/`.
Each .npz holds the reference's keys (step1x3d-reference.md §5.2): `surface [N, 6]`,
`sharp_surface [N, 6]`, `near_surface_points [2N, 4]`, `volume_rand_points [N, 4]` (SDF
positive inside) and `bounds [-1.05, 1.05]`. An .npz is written under a temporary name and
renamed, so a killed run resumes where it stopped (complete files are skipped); every outcome
goes to OUTDIR/prepare_log.jsonl and each failure's reason to stderr as well. Exit status 0 when
every object is done, 1 when some failed. `--cluster ray[:ADDRESS]` runs the objects in Ray actors
(numba stays compiled between objects); MESH_OR_LIST and OUTDIR may then be fsspec URLs (s3://...).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np

from shared import storage
from shared.batchrun import ProcessPool, SerialPool, drive, failure
from shared.cli import run_command
from shared.errors import BackendError
from shared.jobs import Log, Task, iter_tasks
from shared.progress import Progress
from shared.raypool import Cluster, RayPool, add_cluster_argument

from .bvh import TriangleBVH
from .meshes import load_mesh, normalisation, tidy
from .sampling import near_surface_points, sample_sharp, sample_surface, volume_points
from .watertight import WatertightOptions, make_watertight

LOG_NAME = "prepare_log.jsonl"
KEYS = ("surface", "sharp_surface", "near_surface_points", "volume_rand_points", "bounds")


@dataclass(frozen=True)
class PrepareOptions:
    watertight: WatertightOptions = field(default_factory=WatertightOptions)
    skip_watertight: bool = False  # use a mesh that is already closed as it is
    sharp_angle: float = 15.0  # degrees between face normals
    sharp_from: str = "input"  # input | watertight: the mesh whose edges are sampled
    num_surface: int = 100_000
    num_sharp: int = 100_000
    num_near: int = 100_000  # per noise level (two levels)
    num_volume: int = 100_000
    up: str = "auto"
    seed: int = 0
    save_mesh: bool = False  # also write OUTDIR/<id>.watertight.ply

    def __post_init__(self):
        if self.sharp_from not in ("input", "watertight"):
            raise BackendError("invalid_setting", f"sharp_from must be input or watertight, got {self.sharp_from!r}")
        if min(self.num_surface, self.num_sharp, self.num_near, self.num_volume) < 1:
            raise BackendError("invalid_setting", "every sample count must be at least 1")
        if not 0.0 < self.sharp_angle < 180.0:
            raise BackendError("invalid_setting", f"sharp_angle must be in (0, 180), got {self.sharp_angle}")


@dataclass
class Prepared:
    arrays: dict[str, np.ndarray]
    vertices: np.ndarray  # the watertight mesh, normalised frame
    faces: np.ndarray
    info: dict


def is_closed(vertices: np.ndarray, faces: np.ndarray) -> bool:
    """Closed, consistently wound and outward (positive volume)."""
    import trimesh

    mesh = trimesh.Trimesh(vertices, faces, process=True)
    return bool(mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0)


def prepare_mesh(vertices: np.ndarray, faces: np.ndarray, options: PrepareOptions) -> Prepared:
    """Samples of one mesh given in the glTF frame (any scale)."""
    o = options
    rng = np.random.default_rng(o.seed)
    norm = normalisation(vertices, faces)
    info: dict = {"normalisation": norm.to_dict()}
    input_faces = len(faces)
    tidied = tidy(norm.apply(vertices), faces)
    if len(tidied.faces) == 0:
        raise BackendError("input_unreadable", "no face with a non-zero area")
    v_in, faces = tidied.vertices, tidied.faces
    info["tidy"] = tidied.stats
    t0 = time.perf_counter()
    if o.skip_watertight and is_closed(v_in, faces):
        v, f = v_in, faces
        info["watertight"] = "input already closed"
    else:
        result = make_watertight(v_in, faces, o.watertight)
        v, f = result.vertices, result.faces
        info["watertight"] = result.stats
    bvh = TriangleBVH.build(v, f)
    bounds = o.watertight.bounds
    sharp_mesh = (v_in, faces) if o.sharp_from == "input" else (v, f)
    surface = sample_surface(v, f, o.num_surface, rng)
    sharp = sample_sharp(*sharp_mesh, o.num_sharp, o.sharp_angle, rng)
    info["sharp_edges"] = sharp is not None
    if sharp is None:  # a smooth object: the sharp branch sees more of the surface instead
        sharp = sample_surface(v, f, o.num_sharp, rng)
    arrays = {
        "surface": surface,
        "sharp_surface": sharp,
        "near_surface_points": near_surface_points(bvh, v, f, o.num_near, rng),
        "volume_rand_points": volume_points(bvh, o.num_volume, bounds, rng),
        "bounds": np.array([-bounds, bounds], dtype=np.float32),
    }
    info["seconds"] = round(time.perf_counter() - t0, 3)
    info["faces"] = {"input": int(input_faces), "watertight": int(len(f))}
    return Prepared(arrays, v, f, info)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Temporary name in the same folder, then an atomic rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_mesh(path: Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    import trimesh

    from backend.mesh.export import write_atomically

    write_atomically(path, trimesh.Trimesh(vertices, faces, process=False).export(file_type="ply"))


def prepare_file(source: Path, out_path: Path, options: PrepareOptions) -> dict:
    """Load, prepare and write one object; returns the log record's fields."""
    vertices, faces = load_mesh(source, options.up)
    prepared = prepare_mesh(vertices, faces, options)
    if options.save_mesh:
        write_mesh(out_path.with_name(out_path.stem + ".watertight.ply"), prepared.vertices, prepared.faces)
    write_npz(out_path, prepared.arrays)
    return prepared.info


def prepare_item(item: Task, out_dir: str, options: PrepareOptions, overwrite: bool = False) -> dict:
    """Prepare one object wherever it lives (path or URL); never raises, so a failure is reported
    with its code (and trace). Inputs on a URL are fetched to a scratch folder; the .npz is
    written there and published in one PUT, or renamed into place on a local path. On an object
    store the worker checks whether the .npz is there (the driver does not: one HEAD per object
    in one thread would be its bottleneck)."""
    t0 = time.perf_counter()
    out_path = storage.join(out_dir, f"{item.id}.npz")
    try:
        if storage.is_url(out_dir) and not overwrite and storage.exists(out_path):
            return {"status": "skipped", "reason": "done", "output": out_path}
        if not storage.is_url(item.input) and not storage.is_url(out_dir):
            info = prepare_file(Path(item.input), Path(out_path), options)
        else:
            with tempfile.TemporaryDirectory(prefix="prepare-") as scratch:
                source = storage.fetch(item.input, scratch) if storage.is_url(item.input) else item.input
                local = Path(scratch) / "out" / f"{item.id}.npz"
                local.parent.mkdir()
                info = prepare_file(Path(source), local, options)
                for produced in sorted(local.parent.iterdir(), key=lambda p: p == local):  # the .npz last
                    storage.copy_out(str(produced), storage.join(out_dir, produced.name))
        return {"status": "ok", "output": out_path, "info": info, "seconds": round(time.perf_counter() - t0, 3)}
    except BackendError as exc:
        return failure(exc.code, exc.message)
    except FileNotFoundError as exc:
        return failure("input_not_found", str(exc))
    except MemoryError:
        return failure("out_of_memory", "out of memory")
    except Exception as exc:  # one broken asset must not stop a batch of thousands
        cause = exc
        while cause.__cause__ is not None:  # numba wraps a kernel's error in a SystemError
            cause = cause.__cause__
        return failure("internal_error", f"{type(cause).__name__}: {cause}", trace=traceback.format_exc()[-4000:])


class PrepareWorker:
    """A Ray actor's worker: numba's compiled kernels stay warm from one object to the next."""

    def __init__(self, out_dir: str, options: PrepareOptions, overwrite: bool = False):
        self.out_dir, self.options, self.overwrite = out_dir, options, overwrite

    def __call__(self, item: Task) -> dict:
        return prepare_item(item, self.out_dir, self.options, self.overwrite)


def run_batch(source: Path | str, out_dir: Path | str, options: PrepareOptions, workers: int = 1,
              overwrite: bool = False, cluster: str = "local") -> tuple[int, int]:
    """Prepare every object not yet done; returns (ok, failed) counts for this run. The log (the
    run's manifest) is OUTDIR/prepare_log.jsonl, or ./prepare_log.jsonl when OUTDIR is a URL."""
    where = Cluster.parse(cluster)
    out_dir = str(out_dir)
    try:
        storage.makedirs(out_dir)
    except OSError as exc:
        raise BackendError("output_unwritable", f"cannot create {out_dir}: {exc}") from None
    if not storage.is_url(out_dir):
        for stale in Path(out_dir).glob(".*.tmp-*"):
            stale.unlink(missing_ok=True)
    stream = iter_tasks(str(source))
    log = Log(Path(LOG_NAME) if storage.is_url(out_dir) else Path(out_dir) / LOG_NAME)
    log.write("batch", source=str(source), out_dir=out_dir, cluster=cluster, workers=workers, options=asdict(options))
    run = partial(prepare_item, out_dir=out_dir, options=options, overwrite=overwrite)
    if where.kind == "ray":
        pool = RayPool("backend.data.prepare:PrepareWorker",
                       {"out_dir": out_dir, "options": options, "overwrite": overwrite}, max(1, workers),
                       address=where.address)
    else:
        pool = ProcessPool(run, workers) if workers > 1 else SerialPool(run)
    done = None if overwrite or storage.is_url(out_dir) else (lambda item: (Path(out_dir) / f"{item.id}.npz").is_file())
    summary = None
    progress = Progress(sum(1 for _ in iter_tasks(str(source))))  # a streamed count, not a list
    try:
        summary = drive(stream, pool, record=log.write, retries=1, is_done=done, progress=progress)
    finally:
        progress.finish()
        log.write("done", **(summary.as_dict() if summary else {"status": "interrupted"}))
        log.close()
    return summary.ok, summary.failed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d, w = PrepareOptions(), WatertightOptions()
    parser.add_argument("--resolution", type=int, default=w.resolution, help="watertight lattice cells per axis")
    parser.add_argument("--views", type=int, default=w.views, help="depth views for the visibility test")
    parser.add_argument("--view-resolution", type=int, default=w.view_resolution)
    parser.add_argument("--iso-voxels", type=float, default=w.iso_voxels, help="outward offset in lattice cells")
    parser.add_argument("--bounds", type=float, default=w.bounds)
    parser.add_argument("--device", default=w.device, help="rasteriser device: cpu or cuda")
    parser.add_argument("--skip-watertight", action="store_true", help="keep meshes that are already closed")
    parser.add_argument("--sharp-angle", type=float, default=d.sharp_angle)
    parser.add_argument("--sharp-from", choices=("input", "watertight"), default=d.sharp_from)
    parser.add_argument("--num-surface", type=int, default=d.num_surface)
    parser.add_argument("--num-sharp", type=int, default=d.num_sharp)
    parser.add_argument("--num-near", type=int, default=d.num_near, help="per noise level (2 levels)")
    parser.add_argument("--num-volume", type=int, default=d.num_volume)
    parser.add_argument("--up", choices=("auto", "y", "z"), default=d.up,
                        help="source up axis; auto: Z for PLY/STL, Y otherwise (as Blender imports them)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--save-mesh", action="store_true", help="also write <id>.watertight.ply")


def options_from_args(ns: argparse.Namespace) -> PrepareOptions:
    watertight = WatertightOptions(resolution=ns.resolution, views=ns.views, view_resolution=ns.view_resolution,
                                   iso_voxels=ns.iso_voxels, bounds=ns.bounds, device=ns.device)
    return replace(PrepareOptions(), watertight=watertight, skip_watertight=ns.skip_watertight,
                   sharp_angle=ns.sharp_angle, sharp_from=ns.sharp_from, num_surface=ns.num_surface,
                   num_sharp=ns.num_sharp, num_near=ns.num_near, num_volume=ns.num_volume, up=ns.up,
                   seed=ns.seed, save_mesh=ns.save_mesh)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend.data.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="mesh file, folder or list file (a path or an fsspec URL)")
    parser.add_argument("out_dir", help="output folder (a path or an fsspec URL such as s3://bucket/prep)")
    parser.add_argument("--workers", type=int, default=1,
                        help="objects prepared in parallel (processes, or Ray actors with --cluster ray)")
    add_cluster_argument(parser)
    parser.add_argument("--overwrite", action="store_true", help="redo objects that already have an .npz")
    add_arguments(parser)
    ns = parser.parse_args(argv)

    def body() -> int:
        ok, failed = run_batch(ns.source, ns.out_dir, options_from_args(ns), ns.workers, ns.overwrite, ns.cluster)
        print(f"{ok} prepared, {failed} failed -> {ns.out_dir}")
        return 1 if failed else 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
