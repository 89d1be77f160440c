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
every object is done, 1 when some failed.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from shared.errors import BackendError
from shared.jobs import Log, list_inputs, make_tasks, split_done
from shared.lifetime import die_with_parent
from shared.progress import Progress

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


def _run_one(source: str, out_path: str, options: PrepareOptions) -> dict:
    """Worker entry point: never raises, so a failure is reported with its code and trace."""
    t0 = time.perf_counter()
    try:
        info = prepare_file(Path(source), Path(out_path), options)
        return {"status": "ok", "info": info, "seconds": round(time.perf_counter() - t0, 3)}
    except BackendError as exc:
        return {"status": "failed", "code": exc.code, "message": exc.message}
    except MemoryError:
        return {"status": "failed", "code": "out_of_memory", "message": "out of memory"}
    except Exception as exc:  # one broken asset must not stop a batch of thousands
        cause = exc
        while cause.__cause__ is not None:  # numba wraps a kernel's error in a SystemError
            cause = cause.__cause__
        return {"status": "failed", "code": "internal_error", "message": f"{type(cause).__name__}: {cause}",
                "trace": traceback.format_exc()[-4000:]}


def run_batch(source: Path, out_dir: Path, options: PrepareOptions, workers: int = 1,
              overwrite: bool = False) -> tuple[int, int]:
    """Prepare every object not yet done; returns (ok, failed) counts for this run."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackendError("output_unwritable", f"cannot create {out_dir}: {exc}") from None
    for stale in out_dir.glob(".*.tmp-*"):
        stale.unlink(missing_ok=True)
    tasks = make_tasks(list_inputs(source))
    todo = tasks if overwrite else split_done(tasks, lambda t: (out_dir / f"{t.id}.npz").is_file())[0]
    log = Log(out_dir / LOG_NAME)
    log.write("batch", inputs=len(tasks), todo=len(todo), options=asdict(options))
    progress = Progress(len(todo))
    ok = failed = 0

    def record(task, outcome: dict) -> None:
        nonlocal ok, failed
        log.write("object", id=task.id, input=str(task.input), output=str(out_dir / f"{task.id}.npz"), **outcome)
        ok, failed = ok + (outcome["status"] == "ok"), failed + (outcome["status"] != "ok")
        if outcome["status"] != "ok":  # the reason on the console too, not only in the log
            progress.note(f"failed {task.input}: [{outcome['code']}] {outcome['message']}")
        progress.update(outcome["status"] == "ok")

    try:
        if workers <= 1:
            for t in todo:
                record(t, _run_one(str(t.input), str(out_dir / f"{t.id}.npz"), options))
        else:
            # One object per worker process: a crash or a leak stays with its object.
            # die_with_parent: a killed batch leaves no worker behind (its kernel signal follows
            # the starting thread: here the main thread, or the pool's manager thread for the
            # replacements, both alive as long as the pool)
            with ProcessPoolExecutor(workers, max_tasks_per_child=1, initializer=die_with_parent,
                                     initargs=(os.getpid(),)) as pool:
                futures = {pool.submit(_run_one, str(t.input), str(out_dir / f"{t.id}.npz"), options): t for t in todo}
                for future in as_completed(futures):
                    try:
                        outcome = future.result()
                    except Exception as exc:  # the worker process died
                        outcome = {"status": "failed", "code": "internal_error", "message": f"worker died: {exc}"}
                    record(futures[future], outcome)
    finally:
        progress.finish()
        log.write("done", ok=ok, failed=failed)
        log.close()
    return ok, failed


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
    parser.add_argument("source", type=Path, help="mesh file, folder or list file")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--workers", type=int, default=1, help="objects prepared in parallel (processes)")
    parser.add_argument("--overwrite", action="store_true", help="redo objects that already have an .npz")
    add_arguments(parser)
    ns = parser.parse_args(argv)
    try:
        ok, failed = run_batch(ns.source, ns.out_dir, options_from_args(ns), ns.workers, ns.overwrite)
    except BackendError as exc:
        print(f"error {exc}", file=sys.stderr)
        return exc.exit_status
    print(f"{ok} prepared, {failed} failed -> {ns.out_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
