import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from shared.errors import CODES

from .synth import striped_ellipse

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args, cwd=None, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "backend", *args], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def ellipse(tmp_path) -> Path:
    rgb, _ = striped_ellipse(128)
    path = tmp_path / "ellipse.png"
    Image.fromarray(rgb).save(path)
    return path


def test_generate_writes_a_glb_and_reports_json(tmp_path, ellipse):
    out = tmp_path / "deep" / "er" / "e.glb"
    proc = run_cli("generate", str(ellipse), "-o", str(out), "--engine", "preview", "--face-count", "3000",
                   "--texture-resolution", "256", "--geometry-steps", "9", "--json")
    assert proc.returncode == 0, proc.stderr
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert line["ok"] and Path(line["path"]) == out and out.stat().st_size > 1000
    assert line["metadata"]["engine"] == "preview"
    assert line["metadata"]["ignored_settings"]["geometry_steps"] == 9 and "face_count" in line["metadata"]["settings"]
    assert "did not use --geometry-steps" in proc.stderr and "--face-count" not in proc.stderr
    assert "geometry" in proc.stderr  # progress goes to stderr


def test_folder_of_images_gives_one_glb_each_and_keeps_going(tmp_path, ellipse):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b"):
        (folder / f"{name}.png").write_bytes(ellipse.read_bytes())
    (folder / "c.png").write_text("broken")
    proc = run_cli("generate", str(folder), "-o", str(tmp_path / "out"), "--engine", "preview",
                   "--face-count", "2000", "--texture-resolution", "256", "--json")
    results = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [r["ok"] for r in results] == [True, True, False]
    assert results[2]["code"] == "input_unreadable"
    assert proc.returncode == CODES["batch_incomplete"].exit_status  # the batch's summary, not the last failure's
    assert "[input_unreadable]" in proc.stderr and "2 of 3 succeeded" in proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.glb", "b.glb"]


@pytest.mark.parametrize(
    "case, code",
    [("missing", "input_not_found"), ("garbage", "input_unreadable"), ("setting", "invalid_setting"),
     ("unwritable", "output_unwritable"), ("empty", "empty_foreground")],
)
def test_bad_inputs_exit_with_their_code(tmp_path, ellipse, case, code):
    args = [str(ellipse), "-o", str(tmp_path / "x.glb"), "--engine", "preview"]
    if case == "missing":
        args[0] = str(tmp_path / "missing.png")
    elif case == "garbage":
        args[0] = str(tmp_path / "garbage.jpg")
        Path(args[0]).write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    elif case == "setting":
        args += ["--octree-resolution", "5"]
    elif case == "unwritable":
        blocker = tmp_path / "file"
        blocker.write_text("a file, not a folder")
        args[2] = str(blocker / "x.glb")
    elif case == "empty":
        args[0] = str(tmp_path / "white.png")
        Image.new("RGB", (64, 64), "white").save(args[0])
    proc = run_cli("generate", *args)
    assert proc.returncode == CODES[code].exit_status, proc.stderr
    assert f"[{code}]" in proc.stderr
    assert not (tmp_path / "x.glb").exists()


def test_output_that_cannot_be_created_is_refused_before_any_work(tmp_path, ellipse):
    """/proc takes no new files, not even from root (whose permission bits say yes)."""
    from backend.jobs import make_spec
    from shared.errors import BackendError

    for out in ("/proc/step1x3d-test.glb", "/proc/step1x3d-test/deeper/x.glb"):
        with pytest.raises(BackendError) as info:
            make_spec(image=str(ellipse), output=out, engine="preview")
        assert info.value.code == "output_unwritable"
    folder = tmp_path / "taken.glb"
    folder.mkdir()  # the output name exists as a folder
    with pytest.raises(BackendError) as info:
        make_spec(image=str(ellipse), output=str(folder), engine="preview")
    assert info.value.code == "output_unwritable"
    assert sorted(tmp_path.iterdir()) == sorted([ellipse, folder])  # no probe file left behind


def test_step1x3d_engine_without_gpu_says_so(tmp_path, ellipse):
    proc = run_cli("generate", str(ellipse), "-o", str(tmp_path / "x.glb"), "--engine", "step1x3d")
    if proc.returncode == 0:
        pytest.skip("this machine has a GPU and weights")
    assert proc.returncode in (CODES["engine_unavailable"].exit_status, CODES["weights_not_found"].exit_status)


def test_info_reports_engines_devices_and_weights(tmp_path):
    proc = run_cli("info", "--json", "--weights", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["engines"] == ["preview", "step1x3d"]
    assert isinstance(data["gpus"], list)
    assert "geometry-label" in data["weights"]["missing"]
    assert data["auto"].startswith("preview") or data["gpus"]
    plans = {p["kind"]: p for p in data["plans"]}
    assert list(plans) == ["single", "multi", "split", "cpu"] and plans["cpu"]["fits"]
    assert "latency" in plans["split"]["goal"] and "throughput" in plans["multi"]["goal"]


def test_web_and_serve_hand_their_jobs_to_ray_serve_with_cluster(monkeypatch):
    import backend.serving
    from backend.cli import _serve_executor, build_parser

    started = []
    monkeypatch.setattr(backend.serving, "start", lambda **kw: started.append(kw) or object())
    for argv in (["web", "--cluster", "ray:10.0.0.5:6379"], ["serve", "--http", "127.0.0.1:0", "--cluster", "ray"]):
        args = build_parser().parse_args(argv)
        assert callable(_serve_executor(args))
    assert [kw["address"] for kw in started] == ["10.0.0.5:6379", None]
    assert _serve_executor(build_parser().parse_args(["web"])) is None  # local: the server's own queue
