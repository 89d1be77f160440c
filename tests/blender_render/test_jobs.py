"""Batch bookkeeping without Blender: ids, input lists, the log, resume state, atomic folders,
progress."""
import io
import json
import os

import pytest

from blender_render import outputs
from blender_render.batch import LOG_NAME
from shared import jobs
from shared.errors import BackendError
from shared.progress import Progress


def test_object_ids_are_stable_and_distinct(tmp_path):
    a, b = tmp_path / "x" / "model.glb", tmp_path / "y" / "model.glb"
    assert jobs.object_id(a) == jobs.object_id(a)
    assert jobs.object_id(a) != jobs.object_id(b)
    assert jobs.object_id(a).startswith("model-")
    assert jobs.object_id(tmp_path / "we ird#name!.obj").startswith("we_ird_name-")


def test_list_inputs_folder_text_and_json(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.glb", "sub/b.OBJ", "c.txt", "sub/d.ply"):
        (tmp_path / name).write_text("x")
    found = jobs.list_inputs(tmp_path)
    assert [p.name for p in found] == ["a.glb", "b.OBJ", "d.ply"]
    listing = tmp_path / "list.txt"
    listing.write_text(f"# comment\na.glb\n\n{tmp_path / 'sub' / 'd.ply'}\na.glb\nmissing.stl\n")
    assert jobs.list_inputs(listing) == [tmp_path / "a.glb", tmp_path / "sub" / "d.ply", tmp_path / "missing.stl"]
    assert jobs.list_inputs(tmp_path / "a.glb") == [tmp_path / "a.glb"]
    binary = tmp_path / "list.bin"
    binary.write_bytes(b"\x00\x9c\xff")
    with pytest.raises(BackendError):
        jobs.list_inputs(binary)
    js = tmp_path / "list.json"
    js.write_text(json.dumps(["sub/b.OBJ"]))
    assert jobs.list_inputs(js) == [tmp_path / "sub" / "b.OBJ"]
    js.write_text("{bad")
    with pytest.raises(BackendError) as err:
        jobs.list_inputs(js)
    assert err.value.code == "input_unreadable"
    with pytest.raises(BackendError):
        jobs.list_inputs(tmp_path / "nope")


def test_log_survives_a_cut_line_and_tracks_final_failures(tmp_path):
    path = tmp_path / LOG_NAME
    log = jobs.Log(path)
    log.write("object", id="a", status="failed", final=False)
    log.write("object", id="a", status="ok", final=True)
    log.write("object", id="b", status="failed", final=True)
    log.write("object", id="c", status="failed", final=False)
    log.close()
    with open(path, "a") as f:
        f.write('{"event": "object", "id": "d", "sta')  # a kill in the middle of a line
    log = jobs.Log(path)  # appending after the cut line starts a fresh line
    log.write("batch_end", status="done")
    log.close()
    records = jobs.read_log(path)
    assert [r["event"] for r in records] == ["object"] * 4 + ["batch_end"]
    assert jobs.final_failures(records) == {"b"}


def test_split_done_uses_complete_folders_only(tmp_path):
    tasks = jobs.make_tasks([tmp_path / "a.glb", tmp_path / "b.glb", tmp_path / "c.glb", tmp_path / "a.glb"])
    assert len(tasks) == 3
    (tmp_path / "out" / tasks[0].id).mkdir(parents=True)
    (tmp_path / "out" / tasks[0].id / "meta.json").write_text("{}")
    (tmp_path / "out" / tasks[1].id).mkdir()  # no meta.json: not complete
    todo, done = jobs.split_done(tasks, lambda t: outputs.is_complete(tmp_path / "out" / t.id), skip={tasks[2].id})
    assert [t.id for t in done] == [tasks[0].id, tasks[2].id] and [t.id for t in todo] == [tasks[1].id]


def test_staging_commit_discard_and_cleanup(tmp_path):
    out = tmp_path / "obj"
    stage = outputs.make_staging(out)
    (stage / "meta.json").write_text("{}")
    assert not out.exists() and stage.name.startswith(".obj.tmp-")
    assert outputs.commit(stage, out, overwrite=False) and outputs.is_complete(out) and not stage.exists()
    # a second writer finishing the same object keeps the first result
    stage2 = outputs.make_staging(out)
    (stage2 / "meta.json").write_text('{"second": 1}')
    assert not outputs.commit(stage2, out, overwrite=False)
    assert (out / "meta.json").read_text() == "{}" and not stage2.exists()
    stage3 = outputs.make_staging(out)
    (stage3 / "meta.json").write_text('{"third": 1}')
    assert outputs.commit(stage3, out, overwrite=True)
    assert (out / "meta.json").read_text() == '{"third": 1}'
    stage4 = outputs.make_staging(out)
    outputs.discard(stage4, out, keep=True)
    assert outputs.failed_dir(out).is_dir() and not stage4.exists()
    stage5 = outputs.make_staging(out)
    outputs.discard(stage5, out, keep=False)
    assert not stage5.exists()
    leftover = outputs.make_staging(tmp_path / "other")
    assert outputs.clean_stale(tmp_path) == [leftover] and out.is_dir()


def test_write_json_is_strict_and_atomic(tmp_path):
    outputs.write_json(tmp_path / "m.json", {"a": [1.5]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": [1.5]}
    with pytest.raises(ValueError):
        outputs.write_json(tmp_path / "m.json", {"a": float("nan")})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": [1.5]}
    assert os.listdir(tmp_path) == ["m.json"]


def test_progress_rate_and_eta():
    now = [0.0]
    stream = io.StringIO()
    p = Progress(10, stream, interval=0.0, clock=lambda: now[0])
    now[0] = 30.0
    p.update(True)
    now[0] = 60.0
    p.update(False)
    line = p.line()
    assert "[2/10]" in line and "ok 1 failed 1" in line and "2.0 obj/min" in line and "ETA 4m00s" in line
    assert stream.getvalue().count("\n") == 2
