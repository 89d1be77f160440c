"""Install Backend's logic (addon/core/installer.py): torch choice and commands per platform, pip
output parsing, the state file, and the real code path: a real venv, a real install from the
package index of two tiny pure-Python packages, cancelled mid-install and finished by the next run."""
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from addon.core import installer
from addon.core.installer import Layout, Machine, Plan, choose_torch, nvidia_driver_present

from .fake_backend import install_as_backend

REQS = Path(__file__).resolve().parents[2] / "requirements.txt"


def test_nvidia_detection_per_system():
    none = dict(which=lambda name: None, exists=lambda path: False, find=lambda pattern: [])
    assert not nvidia_driver_present("Linux", **none)
    assert nvidia_driver_present("Linux", **{**none, "exists": lambda p: p == "/proc/driver/nvidia/version"})
    assert nvidia_driver_present("Linux", **{**none, "which": lambda n: "/usr/bin/nvidia-smi"})
    assert nvidia_driver_present("Windows", **{**none, "exists": lambda p: p == r"D:\Win\System32\nvidia-smi.exe"},
                                 environ={"SystemRoot": r"D:\Win"})
    assert nvidia_driver_present("Windows", **{**none, "find": lambda p: [p.replace("nv*", "nvdm.inf_amd64")]},
                                 environ={})
    assert not nvidia_driver_present("Darwin", which=lambda n: "/x/nvidia-smi", exists=lambda p: True)


@pytest.mark.parametrize("system,nvidia,pref,build,index", [
    ("Linux", True, "auto", "cuda", ""),  # PyPI's Linux wheel is the CUDA build
    ("Linux", False, "auto", "cpu", installer.CPU_INDEX),
    ("Linux", True, "cpu", "cpu", installer.CPU_INDEX),
    ("Windows", True, "auto", "cuda", installer.CUDA_INDEX),  # PyPI's Windows wheel is CPU-only
    ("Windows", False, "auto", "cpu", ""),
    ("Windows", False, "cuda", "cuda", installer.CUDA_INDEX),
    ("Darwin", False, "auto", "cpu", ""),
    ("Darwin", False, "cuda", "cpu", ""),  # no CUDA on a Mac, whatever was asked
])
def test_torch_choice(system, nvidia, pref, build, index):
    choice = choose_torch(Machine(system, nvidia), pref)
    assert (choice.build, choice.index) == (build, index), choice.reason


@pytest.mark.parametrize("system,python", [("Linux", "venv/bin/python"), ("Darwin", "venv/bin/python"),
                                           ("Windows", "venv/Scripts/python.exe")])
def test_commands_per_platform(tmp_path, system, python):
    machine = Machine(system, system != "Darwin")
    plan = Plan(Layout(tmp_path), REQS, tmp_path / "bundle", "/blender/python", machine, choose_torch(machine))
    steps = {s.name: s for s in plan.steps()}
    assert [s.name for s in plan.steps()] == [name for name, _ in installer.STEPS]
    venv_python = str(tmp_path / python)
    assert steps["venv"].argv == ["/blender/python", "-m", "venv", str(tmp_path / "venv")]
    for name in ("pip", "torch", "requirements", "verify"):
        assert steps[name].argv[0] == venv_python, "everything after the venv runs in the venv, never Blender's"
    torch = steps["torch"].argv
    assert "torch==2.13.0" in torch and "--progress-bar" in torch and "--only-binary=:all:" in torch
    assert ("--extra-index-url" in torch) == (system == "Windows"), "only Windows needs PyTorch's CUDA index"
    assert steps["requirements"].argv[-2:] == ["-r", str(REQS)]
    assert steps["verify"].argv[1:] == ["-m", "backend", "info"]
    assert steps["torch"].pip and steps["requirements"].pip and not steps["verify"].pip
    env = plan.environment({"PYTHONHOME": "/blender", "PYTHONPATH": "/x", "PIP_USER": "1", "PATH": "/bin"})
    assert env["PYTHONPATH"] == str(tmp_path / "bundle") and "PYTHONHOME" not in env and "PIP_USER" not in env


def test_pip_output_parsing():
    p = installer.PipProgress(expected=4)
    lines = [
        "Collecting numpy==2.2.1",
        "  Downloading numpy-2.2.1-cp311-cp311-manylinux_2_17_x86_64.whl (16.4 MB)",
        "Progress 0 of 16391057", "Progress 8195528 of 16391057",
    ]
    for line in lines:
        p.feed(line)
    assert (p.package, p.file, p.bytes, p.total) == ("numpy==2.2.1", "numpy-2.2.1-cp311-cp311-manylinux_2_17_x86_64.whl",
                                                    8195528, 16391057)
    assert p.fraction == pytest.approx(0.9 * 0.5 / 4)
    p.feed("Collecting six==1.17.0 (from -r r.txt (line 2))")
    assert p.package == "six==1.17.0" and p.fetched == 1
    p.feed("  Using cached six-1.17.0-py2.py3-none-any.whl (11 kB)")
    p.feed("  Downloading https://host/packages/idna-3.10-py3-none-any.whl (70 kB)")
    assert p.file == "idna-3.10-py3-none-any.whl" and p.total == 70000 and p.fetched == 2
    p.feed("Requirement already satisfied: packaging in ./venv/lib")
    p.feed("Installing collected packages: six, numpy, idna")
    assert p.installing and p.fetched == 3 and p.fraction == 0.9
    p.feed("ERROR: Could not install packages due to an OSError")
    p.feed("Successfully installed idna-3.10 numpy-2.2.1 six-1.17.0")
    assert p.finished and p.fraction == 1.0 and p.satisfied == 1 and p.errors


def test_requirements_hash_ignores_comments_only(tmp_path):
    a, b, c = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"
    a.write_text("# env\nsix==1.17.0\nidna==3.10  # why\n")
    b.write_text("idna == 3.10\n\n six==1.17.0 # other comment\n")
    c.write_text("six==1.17.0\nidna==3.11\n")
    assert installer.requirements_hash(a) == installer.requirements_hash(b) != installer.requirements_hash(c)


def test_inspect_states(tmp_path):
    layout, reqs = Layout(tmp_path / "env"), tmp_path / "r.txt"
    reqs.write_text("six==1.17.0\n")
    assert installer.inspect(layout, reqs).kind == installer.MISSING
    state = installer.State(phase="torch", requirements_hash=installer.requirements_hash(reqs), pid=2**22 + 12345)
    state.save(layout.state_file)
    assert installer.inspect(layout, reqs).kind == installer.INTERRUPTED, "Blender closed mid-install"
    assert installer.inspect(layout, reqs, running=True).kind == installer.INSTALLING
    state.phase = installer.READY
    state.save(layout.state_file)
    assert installer.inspect(layout, reqs).kind == installer.BROKEN, "ready, but the venv is gone"
    layout.python().parent.mkdir(parents=True)
    layout.python().write_text("")
    assert installer.inspect(layout, reqs).kind == installer.READY
    reqs.write_text("six==1.16.0\n")
    assert installer.inspect(layout, reqs).kind == installer.OUTDATED, "the add-on update changed a pin"
    layout.state_file.write_text("{not json")
    assert installer.inspect(layout, reqs).kind == installer.BROKEN


def test_real_install_cancel_then_resume(tmp_path):
    """The installer's own steps, against the package index: cancelled while pip fetches, the state
    file says so, the next run finishes it; the verify step runs `python -m backend info`."""
    bundle = install_as_backend(tmp_path / "bundle")
    reqs = bundle / "requirements.txt"
    reqs.write_text("six==1.17.0\nidna==3.10\n")
    machine = Machine("Windows" if os.name == "nt" else "Linux", True)  # no torch index: the normal index
    plan = Plan(Layout(tmp_path / "env"), reqs, bundle, sys.executable, machine, choose_torch(machine, "cuda"))
    # torch itself is GBs: stand in a tiny package for it (the same step and flags run)
    original = installer.pinned_torch
    installer.pinned_torch = lambda path: "tomli==2.2.1"
    env = {"PIP_CACHE_DIR": str(tmp_path / "pip-cache")}  # a cold cache: real downloads, real progress
    os.environ.update(env)
    try:
        first = installer.Installer(plan)
        seen: list[installer.Snapshot] = []
        worker = threading.Thread(target=first.run)
        worker.start()
        deadline = time.monotonic() + 120
        while worker.is_alive() and time.monotonic() < deadline:
            snap = first.snapshot()
            seen.append(snap)
            if snap.step == "torch":  # cancel while pip runs
                first.cancel()
            time.sleep(0.05)
        worker.join(60)
        assert first.snapshot().result == installer.CANCELLED
        status = installer.inspect(plan.layout, reqs)
        assert status.kind == installer.CANCELLED and status.state.phase == installer.CANCELLED
        assert any(s.step == "venv" and s.running for s in seen)
        assert any(s.step == "torch" and s.package == installer.RESOLVING for s in seen), "the dry run is shown"

        second = installer.Installer(plan)
        fed: list[str] = []
        parse = second._on_line
        second._on_line = lambda line: (fed.append(line), parse(line))
        assert second.run() == installer.READY, second.snapshot().message + "\n" + "\n".join(second.tail[-20:])
    finally:
        installer.pinned_torch = original
        for key in env:
            os.environ.pop(key, None)
    status = installer.inspect(plan.layout, reqs)
    assert status.kind == installer.READY and status.state.requirements_hash == installer.requirements_hash(reqs)
    assert second.snapshot().fraction == 1.0
    assert any(line.startswith(("Collecting six", "Collecting idna")) for line in fed)
    assert any(line.startswith("Successfully installed") and "six-1.17.0" in line for line in fed)
    assert any(line.startswith("engines:") for line in fed), "verify ran `python -m backend info` (the fake)"
    py = plan.layout.python(machine.system)
    import subprocess

    out = subprocess.run([str(py), "-c", "import six, idna, tomli; print(six.__version__, idna.__version__)"],
                         capture_output=True, text=True)
    assert out.stdout.split() == ["1.17.0", "3.10"], out.stderr
    log = plan.layout.log_file.read_text()
    assert log.count("=== ") == 2 and "--report" in log
    assert json.loads(plan.layout.state_file.read_text())["phase"] == "ready"


@pytest.mark.skipif(os.name == "nt", reason="the stand-in base Python is a shell script")
def test_without_ensurepip_pip_comes_from_its_wheel(tmp_path):
    """Debian's python3 without python3-venv has no ensurepip (and the user no admin rights to add
    it): the venv is made without pip and pip is installed from its hash-checked wheel."""
    base = tmp_path / "python-without-ensurepip"
    base.write_text(f"""#!/bin/sh
if [ "$1" = "-c" ] && [ "$2" = "import ensurepip" ]; then exit 1; fi
exec {sys.executable} "$@"
""")
    base.chmod(0o755)
    bundle = install_as_backend(tmp_path / "bundle")
    reqs = bundle / "requirements.txt"
    reqs.write_text("six==1.17.0\n")
    machine = Machine("Linux", True)
    plan = Plan(Layout(tmp_path / "env"), reqs, bundle, str(base), machine, choose_torch(machine, "cuda"))
    steps = {s.name: s.argv for s in plan.steps(ensurepip=False)}
    assert "--without-pip" in steps["venv"] and steps["pip"][1].endswith(installer.PIP_WHEEL + "/pip")
    original = installer.pinned_torch
    installer.pinned_torch = lambda path: "tomli==2.2.1"
    try:
        run = installer.Installer(plan)
        assert run.run() == installer.READY, run.snapshot().message + "\n" + "\n".join(run.tail[-20:])
    finally:
        installer.pinned_torch = original
    import hashlib
    import subprocess

    wheel = plan.layout.root / installer.PIP_WHEEL
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == installer.PIP_WHEEL_SHA256
    out = subprocess.run([str(plan.layout.python()), "-m", "pip", "--version"], capture_output=True, text=True)
    assert out.stdout.startswith("pip 26.3 "), out.stderr
    assert "no ensurepip" in plan.layout.log_file.read_text()
