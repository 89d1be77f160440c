"""Download Weights against a fake `backend download --json`, word wrapping, time-weighted job
progress and the Set-up advice (all plain Python, no bpy)."""
import sys
import textwrap
import threading
import time

import pytest

from addon.core import installer, setup, timing
from addon.core.downloads import DownloadProgress, WeightsDownload
from addon.core.wrap import wrap

FAKE_DOWNLOAD = textwrap.dedent("""
    import json, sys, time
    mode = sys.argv[1]
    files = [("geometry/model.safetensors", 3000), ("texture/unet.safetensors", 5000)]
    total, done = sum(n for _, n in files), 0
    print("Fetching 2 files", flush=True)  # a library's print: not an event
    for name, size in files:
        for got in range(1000, size + 1, 1000):
            done += 1000
            print(json.dumps({"event": "progress", "file": name, "bytes": got, "total": size,
                              "done_bytes": done, "total_bytes": total}), flush=True)
            time.sleep(0.3 if mode == "slow" else 0.01)
    if mode == "missing":
        print(json.dumps({"event": "error", "code": "weights_not_found", "message": "texture/vae missing"}), flush=True)
        print("huggingface_hub: 404", file=sys.stderr)
        sys.exit(3)
    print(json.dumps({"event": "done", "message": "all weights found"}), flush=True)
""")


@pytest.fixture
def fake(tmp_path):
    path = tmp_path / "fake_download.py"
    path.write_text(FAKE_DOWNLOAD)
    return lambda mode: WeightsDownload([sys.executable, str(path), mode], None, None, tmp_path / "log.txt")


def test_download_progress_and_done(fake, tmp_path):
    dl = fake("ok")
    assert dl.run() == "done"
    snap = dl.snapshot()
    assert (snap.done_bytes, snap.total_bytes, snap.fraction) == (8000, 8000, 1.0)
    assert snap.file == "texture/unet.safetensors" and (snap.file_bytes, snap.file_total) == (5000, 5000)
    assert "Fetching 2 files" in (tmp_path / "log.txt").read_text(), "everything is logged"


def test_download_error_keeps_code_and_message(fake):
    dl = fake("missing")
    assert dl.run() == "error"
    assert dl.snapshot().message == "texture/vae missing" and dl._progress.code == "weights_not_found"


def test_download_cancel_terminates(fake):
    dl = fake("slow")
    worker = threading.Thread(target=dl.run)
    worker.start()
    deadline = time.monotonic() + 20
    while dl.snapshot().done_bytes < 2000 and time.monotonic() < deadline:
        time.sleep(0.05)
    dl.cancel()
    worker.join(10)
    assert not worker.is_alive() and dl.snapshot().result == "cancelled"
    assert 0 < dl.snapshot().done_bytes < 8000


def test_eta_counts_only_this_runs_bytes():
    p = DownloadProgress()
    line = '{{"event": "progress", "file": "a", "bytes": {b}, "total": 10000, "done_bytes": {b}, "total_bytes": 10000}}'
    p.feed(line.format(b=4000), now=100.0)  # 4000 bytes were there from an interrupted run
    assert p.eta(100.5) is None
    p.feed(line.format(b=5000), now=110.0)  # 1000 bytes in 10 s
    assert p.eta(110.0) == pytest.approx(50.0)
    assert not p.feed("not json", now=111.0) and not p.feed("[1, 2]", now=111.0)


def test_wrap_at_words_to_the_measured_width():
    measure = lambda s: 7.0 * len(s) + (6.0 * s.count("W"))  # noqa: E731 (W is wider)
    text = "The backend is not running or stopped answering. Check the interpreter in the add-on preferences"
    lines = wrap(text, 150.0, measure)
    assert " ".join(lines) == text, "no word is cut, none lost"
    assert all(measure(line) <= 150.0 for line in lines)
    assert all(measure(a + " " + b.split()[0]) > 150.0 for a, b in zip(lines, lines[1:])), "lines are filled"
    wide = wrap("WWWWWW WWWWWW WWWWWW", 150.0, measure)
    narrow = wrap("iiiiii iiiiii iiiiii", 150.0, measure)
    assert len(wide) > len(narrow), "the measured width decides, not a character count"
    path = wrap("missing: /home/artist/.cache/huggingface/hub/models--stepfun-ai--Step1X-3D", 150.0, measure)
    assert "".join(path[1:]) == "/home/artist/.cache/huggingface/hub/models--stepfun-ai--Step1X-3D"
    assert len(path) > 2 and all(measure(line) <= 150.0 for line in path[1:-1]), "the path was broken up"
    assert all(line.endswith("/") for line in path[1:-1]), "a long path breaks only after a separator"


def test_progress_by_time_not_by_stage_count():
    clock = timing.StageClock()
    stages = ["preprocess", "geometry", "mesh", "texture", "bake", "export"]
    t = 0.0
    shares = []
    for i, stage in enumerate(stages):
        clock.observe(stage, t, i)
        shares.append(timing.fraction("preview", clock, i, 6, t))
        t += timing.STAGE_SECONDS["preview"][stage] * 2.0  # this machine is twice as slow
    # "bake 4/6" used to read 67 %; by time the bake starts after about 62 % of the work
    assert shares[4] == pytest.approx(sum(list(timing.STAGE_SECONDS["preview"].values())[:4])
                                      / sum(timing.STAGE_SECONDS["preview"].values()), abs=0.02)
    clock2 = timing.StageClock()
    clock2.observe("texture", 0.0)
    early, later = (timing.fraction("step1x3d", clock2, 5, 50, 1.0), timing.fraction("step1x3d", clock2, 5, 50, 8.0))
    assert later > early, "time spent inside a long stage moves the bar"
    assert timing.fraction("step1x3d", clock2, 5, 50, 1e6) < 1.0, "never full before done"
    assert timing.clock_text(75.4) == "1:15"


def test_job_bar_never_moves_back():
    from addon.core.jobs import Job, JobRequest
    from shared import protocol

    job = Job(JobRequest("j", "/tmp/o.glb", {}, engine="preview"))
    job.apply(protocol.decode_event(protocol.event("accepted", job="j", engine="preview", queue_position=0)))
    job.apply(protocol.decode_event(protocol.event("progress", job="j", stage="mesh", step=2, total=6)))
    now = time.monotonic()
    high = job.overall(now + 1.2)
    assert high > 0 and job.overall(now) == high


def ready_env():
    return installer.Status(installer.READY, "Installed")


@pytest.mark.parametrize("facts,operator", [
    (setup.Facts(setup.BUNDLED, "cpu", env=installer.Status(installer.MISSING, "not installed")),
     "step1x3d.install_backend"),
    (setup.Facts(setup.BUNDLED, "cpu", env=installer.Status(installer.MISSING, "x"), online=False),
     "step1x3d.open_network_preferences"),
    (setup.Facts(setup.BUNDLED, "cpu", env=installer.Status(installer.INTERRUPTED, "x")), "step1x3d.install_backend"),
    (setup.Facts(setup.BUNDLED, "cpu", env=installer.Status(installer.MISSING, "x"), installing=True), ""),
    (setup.Facts(setup.BUNDLED, "single", env=ready_env(), weights="missing"), "step1x3d.download_weights"),
    (setup.Facts(setup.BUNDLED, "single", env=ready_env(), weights="missing", downloading=True), ""),
    (setup.Facts(setup.EXISTING, "cpu", config_problem="no backend interpreter is set"), "preferences.addon_show"),
])
def test_setup_advice_names_the_next_step(facts, operator):
    advice = setup.advise(facts)
    assert not advice.ready and advice.missing and advice.operator == operator


def test_setup_ready_and_cpu_needs_no_weights():
    assert setup.advise(setup.Facts(setup.BUNDLED, "cpu", env=ready_env(), weights="missing")).ready
    assert setup.advise(setup.Facts(setup.BUNDLED, "single", env=ready_env(), weights="found")).ready
    outdated = setup.advise(setup.Facts(setup.BUNDLED, "cpu", env=installer.Status(installer.OUTDATED, "x")))
    assert outdated.label == "Update Backend"
    info = "engines: preview\nweights: missing under /hub: geometry, texture"
    assert setup.weights_from_info(info) == "missing"
    assert setup.annotate_info(info, "cpu").splitlines()[1].endswith("(the CPU preview plan needs none)")
    assert setup.annotate_info(info, "single") == info
