"""Config checks, error advice, history records, placement maths and the settings-to-property map."""
import json
import os
import stat
import sys

import numpy as np
import pytest

from addon.core import history, messages, placement, schema
from addon.core.config import BackendConfig, run_info
from addon.shared import settings
from addon.shared.errors import CODES, BackendError


# --- config ------------------------------------------------------------------------------------

def test_config_catches_what_the_user_can_fix(tmp_path):
    with pytest.raises(BackendError, match="no backend interpreter"):
        BackendConfig(python="").check()
    with pytest.raises(BackendError, match="does not exist") as info:
        BackendConfig(python=str(tmp_path / "venv/bin/python")).check()
    assert info.value.code == "backend_unavailable"
    not_exec = tmp_path / "python"
    not_exec.write_text("")
    with pytest.raises(BackendError, match="not executable"):
        BackendConfig(python=str(not_exec)).check()
    with pytest.raises(BackendError, match="no backend package"):
        BackendConfig(python=sys.executable, backend_dir=str(tmp_path)).check()
    with pytest.raises(BackendError) as info:
        BackendConfig(python=sys.executable, weights=str(tmp_path / "missing-weights")).check()
    assert info.value.code == "weights_not_found" and "missing-weights" in info.value.message
    with pytest.raises(BackendError, match="two different GPUs"):
        BackendConfig(python=sys.executable, plan="multi", geometry_gpu=1, texture_gpu=1).check()
    # A hub id is not a path; the CPU plan needs no weights at all.
    BackendConfig(python=sys.executable, weights="stepfun-ai/Step1X-3D").check()
    BackendConfig(python=sys.executable, weights=str(tmp_path / "missing"), plan="cpu").check()


def test_config_command_and_environment(tmp_path):
    (tmp_path / "w").mkdir()
    cfg = BackendConfig(python="/env/bin/python", backend_dir="/repo", weights=str(tmp_path / "w"), plan="multi",
                        geometry_gpu=2, texture_gpu=0, online=False)
    assert cfg.serve_command() == ["/env/bin/python", "-m", "backend", "serve", "--engine", "step1x3d",
                                   "--plan", "multi", "--weights", str(tmp_path / "w")]
    env = cfg.environment({"PYTHONHOME": "/blender/python", "PYTHONPATH": "/x"})
    assert "PYTHONHOME" not in env and env["PYTHONPATH"] == os.pathsep.join(["/repo", "/x"])
    assert env["HF_HUB_OFFLINE"] == "1" and env["CUDA_VISIBLE_DEVICES"] == "2,0"
    assert "CUDA_VISIBLE_DEVICES" not in cfg.environment({}, restrict_gpus=False)
    cpu = BackendConfig(python="/p", weights="org/model", plan="cpu", online=True)
    assert cpu.serve_command() == ["/p", "-m", "backend", "serve", "--engine", "preview"]
    env = cpu.environment({})
    assert "HF_HUB_OFFLINE" not in env and env["CUDA_VISIBLE_DEVICES"] == ""
    assert BackendConfig(python="/p", weights="org/model").info_command()[-2:] == ["--weights", "org/model"]


def test_run_info_reports_output_and_failures(tmp_path):
    fake = tmp_path / "fakepy"
    fake.write_text("#!/bin/sh\nif [ \"$3\" = info ]; then echo 'engines: preview'; echo 'GPUs: none'; exit 0; fi\n"
                    "echo 'boom' >&2; exit 4\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    assert run_info(BackendConfig(python=str(fake), plan="cpu")) == "engines: preview\nGPUs: none"
    broken = tmp_path / "broken"
    broken.write_text("#!/bin/sh\necho 'No module named backend' >&2; exit 1\n")
    broken.chmod(broken.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(BackendError, match="No module named backend") as info:
        run_info(BackendConfig(python=str(broken), plan="cpu"))
    assert info.value.code == "backend_unavailable"


# --- messages ----------------------------------------------------------------------------------

def test_every_code_has_advice_and_the_detail_is_kept():
    assert set(messages.ADVICE) == set(CODES)
    text = messages.explain("out_of_memory", "CUDA out of memory at texture stage")
    assert "single-GPU plan" in text and "texture resolution" in text and text.endswith("(CUDA out of memory at texture stage)")
    assert messages.OFFLINE_HINT.strip() in messages.explain("weights_not_found", online=False)
    assert messages.OFFLINE_HINT.strip() not in messages.explain("weights_not_found", online=True)
    assert messages.explain("no_such_code") == messages.ADVICE["internal_error"]


# --- history -----------------------------------------------------------------------------------

def test_history_round_trip_order_limit_and_damage():
    text = ""
    for i in range(history.LIMIT + 5):
        text = history.add(text, history.Record(job_id=f"j{i}", glb=f"/o/{i}.glb", label="duck",
                                                settings={"seed": i}, created=1000.0 + i))
    records = history.loads(text)
    assert len(records) == history.LIMIT and records[0].job_id == f"j{history.LIMIT + 4}" and records[0].seed == history.LIMIT + 4
    again = history.add(text, history.Record(job_id="j10", glb="/o/new.glb", label="re"))
    assert [r.job_id for r in history.loads(again)].count("j10") == 1 and history.loads(again)[0].glb == "/o/new.glb"
    damaged = json.dumps([{"job_id": "ok", "glb": "/a.glb", "label": "a", "unknown": 1}, {"glb": "/b.glb"}, 5,
                          {"job_id": "bad", "glb": "/c", "label": "c", "settings": "nope"}])
    assert [r.job_id for r in history.loads(damaged)] == ["ok"]
    assert history.loads("{not json") == [] and history.loads("") == []
    assert "seed 3" in history.Record(job_id="x", glb="g", label="Duck", settings={"seed": 3}).summary()


# --- placement (checked against brute force on random inputs) ----------------------------------

def random_matrix(rng):
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    m = np.eye(4)
    m[:3, :3] = q * rng.uniform(0.2, 3.0)
    m[:3, 3] = rng.normal(size=3) * 5
    return m


def test_world_bounds_and_standing_offset_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        pts = rng.normal(size=(rng.integers(1, 200), 3)) * rng.uniform(0.1, 10)
        m = random_matrix(rng)
        lo, hi = placement.world_bounds(pts.astype(np.float32), m)
        world = np.array([(m @ np.append(p, 1.0))[:3] for p in pts.astype(np.float64)])
        np.testing.assert_allclose(lo, world.min(0), atol=1e-5)
        np.testing.assert_allclose(hi, world.max(0), atol=1e-5)
        cursor = rng.normal(size=3) * 4
        moved = world + placement.standing_offset(lo, hi, cursor)
        assert abs(moved[:, 2].min() - cursor[2]) < 1e-5
        np.testing.assert_allclose((moved[:, :2].min(0) + moved[:, :2].max(0)) / 2, cursor[:2], atol=1e-5)
    with pytest.raises(ValueError):
        placement.world_bounds(np.zeros((0, 3)), np.eye(4))


def test_fit_matrix_maps_bounds_onto_source():
    rng = np.random.default_rng(1)
    for _ in range(20):
        src = rng.normal(size=(50, 3)) * rng.uniform(0.1, 5, size=3) + rng.normal(size=3)
        # the backend's normalisation: centred, largest extent 1
        lo, hi = src.min(0), src.max(0)
        res = (src - (lo + hi) / 2) / (hi - lo).max()
        m = placement.fit_matrix(res.min(0), res.max(0), lo, hi)
        back = res @ m[:3, :3].T + m[:3, 3]
        np.testing.assert_allclose(back, src, atol=1e-9)
    np.testing.assert_allclose(placement.fit_matrix([0, 0, 0], [1, 1, 1], [0, 0, 0], [1, 1, 1]), np.eye(4))


# --- settings schema -> Blender properties -----------------------------------------------------

def test_every_setting_becomes_a_property_with_its_schema():
    specs = {s.name: s for s in schema.prop_specs()}
    assert list(specs) == [s.name for s in settings.SETTINGS]
    for s in settings.SETTINGS:
        spec = specs[s.name]
        assert spec.options["default"] == s.default and spec.stage == s.stage in schema.STAGES
        if s.choices:
            assert spec.kind == "EnumProperty" and [i[0] for i in spec.options["items"]] == list(s.choices)
        elif s.type in (int, float):
            assert spec.kind == ("IntProperty" if s.type is int else "FloatProperty")
            assert spec.options["min"] == s.minimum and spec.options["max"] == s.maximum
    assert specs["texture"].kind == "BoolProperty" and specs["lora"].kind == "StringProperty"


def test_enabled_rules_and_collect():
    values = settings.defaults()
    assert schema.enabled("symmetry", values) and not schema.enabled("symmetry", {**values, "model": "base"})
    assert not schema.enabled("texture_resolution", {**values, "texture": False})
    assert schema.enabled("texture", {**values, "texture": False})
    assert not schema.enabled("lora_scale", values) and schema.enabled("lora_scale", {**values, "lora": "x/y"})
    assert schema.collect(lambda n: values[n]) == values
    with pytest.raises(BackendError) as info:
        schema.collect(lambda n: 0 if n == "geometry_steps" else values[n])
    assert info.value.code == "invalid_setting"
