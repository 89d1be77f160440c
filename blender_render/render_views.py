"""Render one 3D asset into multi-view training data.

    blender -b -P blender_render/render_views.py -- INPUT OUTDIR [options]
    python -m blender_render INPUT OUTDIR [options]        (the bpy module)

OUTDIR receives, per view i: color_i.png, normal_i.png, position_i.png (16-bit), depth_i.png,
mask_i.png, optionally albedo_i.png, mr_i.png and float EXRs, plus meta.json. It appears complete
or not at all. Exit status: 0 ok; the shared/errors.py code's status for bad input or settings;
20 when the rendered output failed its checks (nothing is kept unless --keep-failed).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a file by `blender -b -P`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bpy  # noqa: E402  (first of the heavy imports: pymeshlab before bpy breaks bpy)
import numpy as np  # noqa: E402

from shared.cli import run_command  # noqa: E402
from shared.errors import BackendError  # noqa: E402

from blender_render import encoding, meta, outputs, scene  # noqa: E402
from blender_render.cameras import build_views  # noqa: E402
from blender_render.checks import ChecksFailed, ViewCheck, check_color, check_geometry, failures  # noqa: E402
from blender_render.normalization import fit  # noqa: E402
from blender_render.options import RenderOptions, add_render_arguments, options_from_args, script_argv  # noqa: E402
from blender_render.render import Renderer, write_float_exr  # noqa: E402


MIN_BLENDER = (5, 0, 0)  # scene.compositing_node_group and the File Output node's items


@dataclass
class Result:
    out_dir: Path
    views: int
    seconds: float
    warnings: list[str] = field(default_factory=list)
    committed: bool = True  # False: a complete output appeared meanwhile and was kept


class _Clock:
    """Seconds per step. The main thread and the writer thread each add to their own steps."""

    def __init__(self):
        self.start = time.perf_counter()
        self.times: dict[str, float] = {}

    def add(self, name: str, since: float) -> float:
        now = time.perf_counter()
        self.times[name] = round(self.times.get(name, 0.0) + now - since, 4)
        return now


def _write_geometry(stage: Path, files: dict, passes, depth_range) -> None:
    mask = passes.mask
    if "normal" in files:
        encoding.write_png(stage / files["normal"], encoding.quantize16(encoding.normal_to_unit(passes.normal, mask)))
    if "position" in files:
        encoding.write_png(stage / files["position"],
                           encoding.quantize16(encoding.position_to_unit(passes.position, mask)))
    if "depth" in files:
        encoding.write_png(stage / files["depth"], encoding.depth_to_uint16(passes.depth, mask, *depth_range))
    if "mask" in files:
        encoding.write_png(stage / files["mask"], mask.astype(np.uint8) * 255)
    for name in ("normal", "position", "depth"):
        if f"{name}_exr" in files:
            write_float_exr(stage / files[f"{name}_exr"], getattr(passes, name))


def _write_materials(stage: Path, files: dict, color, bits: int) -> None:
    alpha = np.clip(color.alpha, 0.0, 1.0)[..., None]
    for name, values in color.aovs.items():
        straight = encoding.unpremultiply(values, color.alpha)
        if name == "albedo":
            straight = encoding.linear_to_srgb(straight)
        encoding.write_png(stage / files[name], encoding.quantize(np.concatenate([straight, alpha], axis=-1), bits))


def _finish_geometry(cam, passes, bounds, stage: Path, view: dict, clock: _Clock) -> ViewCheck:
    t = time.perf_counter()
    check = check_geometry(cam, passes.mask, passes.normal, passes.position, passes.depth, bounds)
    t = clock.add("checks", t)
    _write_geometry(stage, view["files"], passes, view["depth_png_range"])
    clock.add("geometry_write", t)
    return check


def _finish_color(check: ViewCheck, color, mask, stage: Path, view: dict, bits: int, clock: _Clock) -> None:
    t = time.perf_counter()
    check_color(check, color.alpha, mask)
    t = clock.add("checks", t)
    _write_materials(stage, view["files"], color, bits)
    clock.add("color_write", t)


def render_object(input_path, out_dir, options: RenderOptions) -> Result:
    """Render `input_path` into `out_dir`, atomically. Raises BackendError for bad input or
    settings and ChecksFailed when the renders fail their checks; nothing is left behind then
    (except OUT.failed/ with --keep-failed)."""
    if bpy.app.version < MIN_BLENDER:
        raise BackendError("engine_unavailable", f"blender_render needs Blender {'.'.join(map(str, MIN_BLENDER))} "
                                                 f"or newer (the compositor API changed), found {bpy.app.version_string}")
    clock = _Clock()
    t = clock.start
    input_path, out_dir = Path(input_path), Path(out_dir)
    if not input_path.exists() or input_path.is_dir():
        raise BackendError("input_not_found", f"{input_path} does not exist or is a folder")
    if out_dir.exists() and not options.overwrite:
        raise BackendError("output_unwritable", f"{out_dir} already exists (use --overwrite to replace it)")
    stage = outputs.make_staging(out_dir)
    work = stage / ".work"
    work.mkdir()
    keep = False
    try:
        source = {"path": str(input_path.resolve()), "name": input_path.name, "sha256": outputs.sha256_file(input_path),
                  "bytes": input_path.stat().st_size, "format": input_path.suffix.lower().lstrip(".")}
        t = clock.add("hash", t)
        scene.reset()
        import_warnings = scene.import_asset(input_path, options.up)
        t = clock.add("import", t)
        info = scene.prepare(options, import_warnings)
        norm = fit(info.bbox_min, info.bbox_max, options.normalize)
        scene.apply_normalization(norm)
        warnings = list(info.warnings)
        if options.material_passes:
            warnings += scene.add_material_aovs(options.material_passes)
        renderer = Renderer(options, work)
        cams = build_views(options)
        bounds = norm.bounds
        if options.normalize == "none" and (np.any(bounds[0] < -0.5) or np.any(bounds[1] > 0.5)):
            warnings.append("the object extends beyond the unit cube: position PNGs are clipped (use --exr)")
        t = clock.add("prepare", t)

        # Checks and PNG encoding run in a writer thread while Cycles renders the next view
        # (zlib and most numpy work release the GIL).
        views, masks = [], []
        with ThreadPoolExecutor(max_workers=1) as writer:
            pending = []
            renderer.begin_geometry()
            for cam in cams:
                passes = renderer.geometry(cam)
                t = clock.add("geometry_render", t)
                view = cam.to_meta()
                view["files"] = meta.view_files(cam.index, options)
                view["depth_png_range"] = list(cam.depth_range(norm.radius))
                views.append(view)
                masks.append(passes.mask)
                pending.append(writer.submit(_finish_geometry, cam, passes, bounds, stage, view, clock))
            checks: list[ViewCheck] = [f.result() for f in pending]
            t = clock.add("geometry_wait", t)
            if "color" in options.passes:
                pending = []
                renderer.begin_color()
                for cam, check, mask, view in zip(cams, checks, masks, views):
                    color = renderer.color(cam, stage / view["files"]["color"])
                    t = clock.add("color_render", t)
                    pending.append(writer.submit(_finish_color, check, color, mask, stage, view,
                                                 options.color_depth, clock))
                for f in pending:
                    f.result()
                t = clock.add("color_wait", t)
        for check, view in zip(checks, views):
            view["checks"] = check.to_meta()
            warnings += check.warnings
        failed = failures(checks)
        clock.times["total"] = round(time.perf_counter() - clock.start, 4)
        record = {
            "format": meta.FORMAT,
            "status": "failed" if failed else "ok",
            "failures": failed,
            "source": source,
            "blender": {"version": bpy.app.version_string, "build_hash": bpy.app.build_hash.decode()
                        if isinstance(bpy.app.build_hash, bytes) else bpy.app.build_hash,
                        "module": bpy.app.binary_path == ""},
            "options": options.to_dict(),
            "seed": options.seed,
            "normalization": norm.to_meta(),
            "scene": info.to_meta(),
            "render": renderer.settings_meta(),
            "conventions": meta.CONVENTIONS,
            "encoding": meta.encoding_meta(options),
            "views": views,
            "timings": clock.times,
            "warnings": warnings,
        }
        shutil.rmtree(work)
        outputs.write_json(stage / outputs.META_NAME, record)
        if failed:
            keep = options.keep_failed
            raise ChecksFailed(failed)
        committed = outputs.commit(stage, out_dir, options.overwrite)
        return Result(out_dir, len(cams), clock.times["total"], warnings, committed)
    except BaseException:
        outputs.discard(stage, out_dir, keep=keep)
        raise


def main(argv: list[str] | None = None) -> int:
    args = script_argv(sys.argv if argv is None else ["render_views", *argv])
    parser = argparse.ArgumentParser(prog="blender_render", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="glb, gltf, obj, fbx, ply, stl, usd(z), abc or blend file")
    parser.add_argument("out_dir", type=Path, help="the object's output folder (created atomically)")
    add_render_arguments(parser)
    try:
        ns = parser.parse_args(args)
    except SystemExit as exc:  # argparse exits 2 on bad flags; keep that status
        return int(exc.code or 0)

    def body() -> int:
        try:
            result = render_object(ns.input, ns.out_dir, options_from_args(ns))
        except ChecksFailed as exc:
            print(f"error [{exc.code}] {exc}", file=sys.stderr)
            return exc.exit_status
        for w in result.warnings:
            print(f"warning: {w}", file=sys.stderr)
        print(f"ok: {result.out_dir} ({result.views} views, {result.seconds:.2f} s, {len(result.warnings)} warnings)")
        return 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
