import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend import cli
from backend.runtime import weights
from shared.errors import CODES, BackendError

from .fake_hub import REV, FakeHub, geometry_files, repo_dir, tensors, write_repo

ROOT = Path(__file__).resolve().parents[2]
TEXTURE = {"Step1X-3D-Texture/step1x-3d-ig2v.safetensors": tensors(256)}
VAE = {"config.json": b'{"scaling_factor": 0.13025}', "diffusion_pytorch_model.safetensors": tensors()}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty hub cache huggingface_hub reads in this process."""
    from huggingface_hub import constants

    hub = tmp_path / "hf" / "hub"
    hub.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.delenv(weights.ENV_VAR, raising=False)
    return hub


def write_local(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def test_local_folder_layout_is_found_component_by_component(tmp_path, cache):
    write_local(tmp_path, geometry_files("Step1X-3D-Geometry-1300m"))
    write_local(tmp_path / "Step1X-3D", TEXTURE)
    write_local(tmp_path / "sdxl-vae-fp16-fix", VAE)
    status = weights.find_weights(str(tmp_path))
    assert set(status.found) == {"geometry-base", "texture-adapter", "sdxl-vae"}
    assert status.missing == ["geometry-label", "sdxl-base"]
    assert "geometry-label" in status.describe()


def test_a_hub_id_is_looked_up_under_that_id(cache):
    snapshot = write_repo(cache, "myorg/custom", {**geometry_files("Step1X-3D-Geometry-Label-1300m", label=True),
                                                  **TEXTURE})
    write_repo(cache, weights.SDXL_VAE_REPO, VAE)
    status = weights.find_weights("myorg/custom")
    assert status.root == "myorg/custom"
    assert status.found["geometry-label"] == snapshot / "Step1X-3D-Geometry-Label-1300m"
    assert status.found["texture-adapter"] == snapshot / "Step1X-3D-Texture"
    assert status.found["sdxl-vae"] == repo_dir(cache, weights.SDXL_VAE_REPO) / "snapshots" / REV
    assert status.missing == ["geometry-base", "sdxl-base"]
    assert weights.find_weights().missing == list(weights.COMPONENTS)[:3] + ["sdxl-base"]  # stepfun-ai: nothing


@pytest.mark.parametrize("damage", ["truncated", "missing_part", "bad_json", "dangling"])
def test_a_component_counts_only_when_every_file_is_whole(cache, damage):
    files = geometry_files("Step1X-3D-Geometry-1300m")
    weights_file = "Step1X-3D-Geometry-1300m/vae/diffusion_pytorch_model.safetensors"
    if damage == "truncated":
        files[weights_file] = files[weights_file][:-10]
    elif damage == "missing_part":
        del files[weights_file]
    elif damage == "bad_json":
        files["Step1X-3D-Geometry-1300m/scheduler/scheduler_config.json"] = b'{"shift": '
    snapshot = write_repo(cache, "myorg/custom", files)
    if damage == "dangling":  # the blob went away under the snapshot's symlink
        (snapshot / weights_file).resolve().unlink()
    status = weights.find_weights("myorg/custom")
    assert "geometry-base" in status.missing and "geometry-base" not in status.found
    want = "scheduler/scheduler_config.json" if damage == "bad_json" else "vae/diffusion_pytorch_model.safetensors"
    assert status.incomplete["geometry-base"] == [want]
    assert want in status.describe()


def test_the_two_weights_modules_do_not_import_each_other():
    def imports(path: Path) -> set[str]:
        tree = ast.parse(path.read_text())
        return {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}

    runtime, texture = ROOT / "backend/runtime/weights.py", ROOT / "backend/texture/weights.py"
    assert not any("texture" in m for m in imports(runtime))
    assert "backend.runtime.weights" in imports(texture)


def hub_with_everything() -> dict[str, dict[str, bytes]]:
    return {"myorg/custom": {**geometry_files("Step1X-3D-Geometry-1300m"), **TEXTURE,
                             "README.md": b"not needed", "Step1X-3D-Geometry-Label-1300m/model_index.json": b"{}"},
            weights.SDXL_VAE_REPO: {**VAE, "diffusion_pytorch_model.bin": b"x" * 500}}


def test_download_fetches_only_what_is_needed_and_reports_bytes(cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    hub, events = FakeHub(cache, hub_with_everything()), []
    status = weights.download(["geometry-base", "texture-adapter", "sdxl-vae"], "myorg/custom", events.append, hub)
    assert {"geometry-base", "texture-adapter", "sdxl-vae"} <= set(status.found)
    assert "README.md" not in hub.fetched and "diffusion_pytorch_model.bin" not in hub.fetched
    assert not any("Label" in f for f in hub.fetched)
    start, progress = events[0], events[1:]
    total = sum(len(hub.repos[r][f]) for r in hub.repos for f in hub.fetched if f in hub.repos[r])
    assert start["event"] == "start" and start["total_bytes"] == total and start["files"] == len(hub.fetched)
    assert all(e["event"] == "progress" for e in progress)
    done = [e["done_bytes"] for e in progress]
    assert done == sorted(done) and done[-1] == total and all(e["total_bytes"] == total for e in progress)
    for name in hub.fetched:
        last = [e for e in progress if e["file"].endswith("/" + name)][-1]
        assert last["bytes"] == last["total"]
    hub.fetched.clear()
    weights.download(["geometry-base"], "myorg/custom", events.append, hub)
    assert hub.fetched == []  # already complete: nothing fetched


def test_download_names_what_is_still_missing_and_checks_the_disk_first(cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    lost = "Step1X-3D-Geometry-1300m/transformer/diffusion_pytorch_model.safetensors"
    hub = FakeHub(cache, hub_with_everything(), drop=lost)
    with pytest.raises(BackendError) as info:
        weights.download(["geometry-base"], "myorg/custom", hub=hub)
    assert info.value.code == "weights_not_found" and "geometry-base" in info.value.message
    assert "transformer/diffusion_pytorch_model.safetensors" in info.value.message
    hub = FakeHub(cache, {"myorg/custom": {"Step1X-3D-Texture/step1x-3d-ig2v.safetensors": tensors()}})
    monkeypatch.setattr(weights, "free_bytes", lambda folder: 100)
    with pytest.raises(BackendError) as info:
        weights.download(["texture-adapter"], "myorg/custom", hub=hub)
    assert info.value.code == "disk_full" and hub.fetched == []


def test_download_beside_a_local_folder_fetches_sdxl_but_not_step1x3d(tmp_path, cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    folder = tmp_path / "weights"
    write_local(folder, TEXTURE)
    hub = FakeHub(cache, hub_with_everything())
    status = weights.download(["texture-adapter", "sdxl-vae"], str(folder), hub=hub)
    assert status.found["texture-adapter"] == folder / "Step1X-3D-Texture" and "sdxl-vae" in status.found
    with pytest.raises(BackendError) as info:
        weights.download(["geometry-base"], str(folder), hub=hub)
    assert info.value.code == "weights_not_found" and "geometry-base" in info.value.message


def test_download_command_json_events_and_exit_status(cache, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    lost = "Step1X-3D-Texture/step1x-3d-ig2v.safetensors"
    monkeypatch.setattr(weights, "HuggingFaceHub", lambda: FakeHub(cache, hub_with_everything(), drop=lost))

    def no_network():  # the remover's own download (not the hub's) fails here: only a warning among the defaults
        raise BackendError("weights_not_found", "no network")

    monkeypatch.setattr("backend.background.download_model", no_network)
    status = cli.main(["download", "--json", "--weights", "myorg/custom", "--model", "base", "--no-texture"])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert status == 0 and lines[-1]["event"] == "done" and "geometry-base" in lines[-1]["weights"]["found"]
    assert {e["event"] for e in lines[1:-1]} == {"progress"}
    assert set(lines[-2]) == {"event", "file", "bytes", "total", "done_bytes", "total_bytes"}
    status = cli.main(["download", "--json", "--weights", "myorg/custom", "texture-adapter"])
    out, err = capsys.readouterr()
    last = json.loads(out.splitlines()[-1])
    assert status == CODES["weights_not_found"].exit_status
    assert last["event"] == "error" and last["code"] == "weights_not_found" and "texture-adapter" in last["message"]
    assert "[weights_not_found]" in err


def test_info_and_download_commands_use_the_hub_id(tmp_path):
    """As a user runs them: HF_HOME points at the cache, offline; nothing under stepfun-ai."""
    write_repo(tmp_path / "hub", "myorg/custom", geometry_files("Step1X-3D-Geometry-1300m"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    env.pop(weights.ENV_VAR, None)

    def run(*args):
        return subprocess.run([sys.executable, "-m", "backend", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)

    info = run("info", "--json", "--weights", "myorg/custom")
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)["weights"]
    assert data["root"] == "myorg/custom" and "models--myorg--custom" in data["found"]["geometry-base"]
    ok = run("download", "--weights", "myorg/custom", "--model", "base", "--no-texture")
    assert ok.returncode == 0, ok.stderr
    missing = run("download", "--weights", "myorg/custom", "--model", "label")
    assert missing.returncode == CODES["weights_not_found"].exit_status
    assert "geometry-label" in missing.stderr and "texture-adapter" in missing.stderr


def test_auto_and_step1x3d_choose_the_weights_of_the_hub_id(cache):
    from backend import engines

    write_repo(cache, "myorg/custom", geometry_files("Step1X-3D-Geometry-1300m"))
    untextured = {"model": "base", "texture": False}
    choice = engines.choose("step1x3d", "myorg/custom", untextured, plan="cpu")
    assert choice.name == "step1x3d"
    with pytest.raises(BackendError) as info:  # the default repo has nothing
        engines.choose("step1x3d", None, untextured, plan="cpu")
    assert info.value.code == "weights_not_found"
