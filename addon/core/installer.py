"""Installs the bundled backend's own Python environment: venv, pip, torch for this machine, the
pinned requirements, then `python -m backend info` as the proof it runs.

Plain Python, no bpy: the Blender layer starts `Installer.run()` on a worker thread and reads
`snapshot()` from a timer. Every step is written to a state file before it starts and after it
ends, so an install that Blender's exit (or a crash) cut short is found at the next start
(`inspect()` says "interrupted") and finished by running again: each step is idempotent (pip skips
what is installed). Only a venv whose interpreter no longer runs is rebuilt from scratch (repair).
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .lines import Cancelled, run_lines

PIP_PIN = "pip==26.3"  # first pip with a stable `--progress-bar raw` and install reports we rely on
# A Python without ensurepip (Debian's python3 without python3-venv, which Debian's Blender uses)
# makes the venv without pip; pip then comes as this wheel from the package index, checked by hash.
PIP_WHEEL = "pip-26.3-py3-none-any.whl"
PIP_WHEEL_SHA256 = "f3b60b20ffaadd4415ed7957212a38ac63fa4c5fa375bd0f4a797777940fad13"
SIMPLE_INDEX = "https://pypi.org/simple/pip/"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CUDA_INDEX = "https://download.pytorch.org/whl/cu128"  # Windows only: PyPI's Windows torch is CPU-only
STATE_VERSION = 1
STALE_AFTER = 6 * 3600.0  # an "installing" state older than this is interrupted, whatever its pid

# Step names in order, with their share of the overall bar (torch and the rest dominate the bytes).
STEPS = (("venv", 0.04), ("pip", 0.04), ("torch", 0.44), ("requirements", 0.44), ("verify", 0.04))
STEP_LABELS = {"venv": "Creating the environment", "pip": "Updating pip", "torch": "Installing PyTorch",
               "requirements": "Installing the backend's packages", "verify": "Checking the backend"}

RESOLVING = "Resolving which packages are needed…"  # shown while pip's dry run finds them

# Outcomes of inspect()
MISSING, INSTALLING, INTERRUPTED, CANCELLED, FAILED, OUTDATED, BROKEN, READY = (
    "missing", "installing", "interrupted", "cancelled", "failed", "outdated", "broken", "ready")


# --- the machine ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Machine:
    system: str  # platform.system(): Linux, Windows, Darwin
    nvidia: bool  # an NVIDIA driver is installed


def nvidia_driver_present(system: str, which: Callable[[str], str | None] = shutil.which,
                          exists: Callable[[str], bool] = os.path.exists,
                          find: Callable[[str], list[str]] = glob.glob, environ: dict | None = None) -> bool:
    """Driver files, not a GPU query: nvidia-smi on PATH, the kernel module's /proc entry on Linux,
    nvidia-smi in System32 or the driver store on Windows. macOS has no CUDA."""
    if system == "Darwin":
        return False
    if which("nvidia-smi"):
        return True
    if system == "Linux":
        return exists("/proc/driver/nvidia/version")
    if system == "Windows":
        root = (environ if environ is not None else os.environ).get("SystemRoot", r"C:\Windows")
        return exists(rf"{root}\System32\nvidia-smi.exe") or bool(
            find(rf"{root}\System32\DriverStore\FileRepository\nv*\nvidia-smi.exe"))
    return False


def this_machine() -> Machine:
    import platform

    system = platform.system()
    return Machine(system, nvidia_driver_present(system))


@dataclass(frozen=True)
class TorchChoice:
    build: str  # "cuda" or "cpu"
    index: str  # extra index that holds this build; "" means the normal package index
    reason: str


def choose_torch(machine: Machine, preference: str = "auto") -> TorchChoice:
    """Which torch build to install. PyPI's Linux wheel is the CUDA build (GBs of CUDA libraries),
    its Windows wheel is CPU-only, its macOS wheel is CPU + Apple's Metal (MPS); PyTorch's own index
    holds the other builds. The +cpu/+cuXXX local version outranks the plain one, so pip takes the
    build from the extra index while the rest still comes from the normal index."""
    chosen = preference in ("cuda", "cpu")
    want = preference if chosen else ("cuda" if machine.nvidia else "cpu")
    found = "chosen in the preferences" if chosen else ("NVIDIA driver found" if want == "cuda" else "no NVIDIA driver")
    if machine.system == "Darwin":
        return TorchChoice("cpu", "", "macOS: PyPI's build (CPU and Apple Metal); there is no CUDA on a Mac")
    if machine.system == "Windows":
        if want == "cuda":
            return TorchChoice("cuda", CUDA_INDEX, f"{found}: the CUDA build from PyTorch's index")
        return TorchChoice("cpu", "", f"{found}: PyPI's Windows build (CPU only)")
    if want == "cuda":
        return TorchChoice("cuda", "", f"{found}: PyPI's Linux build (CUDA)")
    return TorchChoice("cpu", CPU_INDEX, f"{found}: the CPU build (saves about 3 GB of CUDA libraries)")


# --- files --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Layout:
    """Where the environment lives (the extension's user folder): survives add-on updates."""

    root: Path

    @property
    def venv(self) -> Path:
        return self.root / "venv"

    def python(self, system: str | None = None) -> Path:
        windows = (system or ("Windows" if os.name == "nt" else "")) == "Windows"
        return self.venv / ("Scripts/python.exe" if windows else "bin/python")

    @property
    def state_file(self) -> Path:
        return self.root / "install-state.json"

    @property
    def log_file(self) -> Path:
        return self.root / "install.log"


def requirements_hash(path: Path) -> str:
    """Hash of the pins that matter (comments and blank lines ignored): a changed pin means the
    environment needs an update."""
    lines = []
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(re.sub(r"\s+", "", line).lower())
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()[:16]


def pinned_torch(path: Path) -> str:
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if re.match(r"^torch\s*[=<>~!]", line):
            return re.sub(r"\s+", "", line)
    return "torch"


@dataclass
class State:
    phase: str = ""  # a step name while it runs, or ready / failed / cancelled
    requirements_hash: str = ""
    torch_build: str = ""
    base_python: str = ""
    pid: int = 0  # process that ran the install (Blender): dead means the install was interrupted
    updated: float = 0.0
    error: str = ""
    version: int = STATE_VERSION

    @classmethod
    def load(cls, path: Path) -> "State | None":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except (OSError, ValueError, TypeError):
            return None

    def save(self, path: Path) -> None:
        self.updated = time.time()
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(path.name + ".part")
        temp.write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")
        os.replace(temp, path)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


@dataclass(frozen=True)
class Status:
    kind: str  # one of MISSING ... READY
    text: str
    state: State | None = None


def inspect(layout: Layout, requirements: Path, running: bool = False, system: str | None = None) -> Status:
    """What the environment needs now. `running`: this Blender runs an install at the moment."""
    state = State.load(layout.state_file)
    if running:
        return Status(INSTALLING, "Installing…", state)
    if state is None:
        if layout.python(system).exists():
            return Status(BROKEN, "An environment exists but was not installed by this add-on: repair it", None)
        return Status(MISSING, "The backend is not installed", None)
    if state.phase in dict(STEPS):
        recent = time.time() - state.updated < STALE_AFTER
        if recent and _alive(state.pid) and state.pid != os.getpid():
            return Status(INSTALLING, "Another Blender is installing the backend", state)
        return Status(INTERRUPTED, f"The install stopped while {STEP_LABELS[state.phase].lower()}: resume it", state)
    if state.phase == CANCELLED:
        return Status(CANCELLED, "The install was cancelled: resume it", state)
    if state.phase == FAILED:
        return Status(FAILED, f"The install failed: {state.error}", state)
    if state.phase == READY:
        if not layout.python(system).exists():
            return Status(BROKEN, "The environment's Python is gone: repair it", state)
        if state.requirements_hash != requirements_hash(requirements):
            return Status(OUTDATED, "The add-on was updated and needs other packages: update the environment", state)
        return Status(READY, "Installed", state)
    return Status(BROKEN, f"Unknown install state {state.phase!r}: repair it", state)


# --- pip's output -------------------------------------------------------------------------------

_SIZE = re.compile(r"\(([\d.]+)\s*(kB|KB|MB|GB|bytes|B)\)")
_UNITS = {"B": 1, "bytes": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9}


@dataclass
class PipProgress:
    """pip's output (with `--progress-bar raw`) turned into counts: which package, which file,
    how many bytes of it, how many of the packages this run installs are fetched."""

    expected: int = 0  # packages this run installs (from the dry-run report); 0 when unknown
    package: str = ""
    file: str = ""
    bytes: int = 0
    total: int = 0
    fetched: int = 0  # packages whose file is complete (downloaded or taken from the cache)
    satisfied: int = 0
    installing: bool = False
    finished: bool = False
    errors: list[str] = field(default_factory=list)

    def feed(self, line: str) -> bool:
        """Update from one output line; True when something shown changed."""
        text = line.strip()
        if text.startswith("Collecting "):
            self._complete_file()
            self.package = text[len("Collecting "):].split(" (from", 1)[0].strip()
            return True
        if text.startswith(("Downloading ", "Using cached ")):
            self._complete_file()
            name = text.split(" ", 2)[-1] if text.startswith("Using") else text.split(" ", 1)[1]
            self.file = name.split(" (", 1)[0].rsplit("/", 1)[-1]
            size = _SIZE.search(text)
            self.total = int(float(size.group(1)) * _UNITS[size.group(2)]) if size else 0
            self.bytes = self.total if text.startswith("Using") else 0
            if text.startswith("Using"):
                self._complete_file()
            return True
        match = re.match(r"^Progress (\d+) of (\d+)$", text)
        if match:
            self.bytes, self.total = int(match.group(1)), int(match.group(2))
            return True
        if text.startswith("Requirement already satisfied"):
            self.satisfied += 1
            return False
        if text.startswith("Installing collected packages"):
            self._complete_file()
            self.installing, self.file, self.package = True, "", ""
            return True
        if text.startswith("Successfully installed"):
            self.installing, self.finished = False, True
            return True
        if text.startswith("ERROR:"):
            self.errors.append(text[len("ERROR:"):].strip())
        return False

    def _complete_file(self) -> None:
        if self.file:
            self.fetched += 1
            self.file, self.bytes, self.total = "", 0, 0

    @property
    def fraction(self) -> float:
        """Share of this pip run done: fetching is 90 %, unpacking the last 10 %."""
        if self.finished:
            return 1.0
        if self.installing:
            return 0.9
        if not self.expected:
            return 0.0
        partial = self.bytes / self.total if self.total else 0.0
        return min(0.9, 0.9 * (self.fetched + partial) / self.expected)


def expected_packages(report: Path) -> int:
    """How many packages a pip install report (`--dry-run --report`) says will be installed."""
    try:
        return len(json.loads(Path(report).read_text(encoding="utf-8")).get("install", []))
    except (OSError, ValueError, AttributeError):
        return 0


# --- the plan -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    name: str
    argv: list[str]
    pip: bool = False  # a pip install: run a dry-run report first and parse the output


@dataclass(frozen=True)
class Plan:
    layout: Layout
    requirements: Path
    bundle: Path  # folder with backend/ and shared/ (PYTHONPATH of the verify step)
    base_python: str  # interpreter that creates the venv (Blender's own)
    machine: Machine
    torch: TorchChoice

    def steps(self, ensurepip: bool = True) -> list[Step]:
        """`ensurepip=False`: the base Python cannot put pip into a venv; pip comes from its wheel
        (downloaded by `fetch_pip_wheel` into the environment's folder first)."""
        python = str(self.layout.python(self.machine.system))
        pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
        fetch = [*pip, "--progress-bar", "raw", "--only-binary=:all:"]
        torch = [*fetch, pinned_torch(self.requirements)]
        if self.torch.index:
            torch += ["--extra-index-url", self.torch.index]
        wheel = str(self.layout.root / PIP_WHEEL)
        venv = [self.base_python, "-m", "venv", *([] if ensurepip else ["--without-pip"]), str(self.layout.venv)]
        return [
            Step("venv", venv),
            Step("pip", [*pip, "--upgrade", PIP_PIN] if ensurepip else
                 [python, f"{wheel}/pip", "install", "--disable-pip-version-check", "--no-index", wheel]),
            Step("torch", torch, pip=True),
            Step("requirements", [*fetch, "-r", str(self.requirements)], pip=True),
            Step("verify", [python, "-m", "backend", "info"]),
        ]

    def environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """No Blender Python variables leak in; the bundle is importable for the verify step."""
        env = dict(os.environ if base is None else base)
        for name in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONEXECUTABLE", "PYTHONNOUSERSITE",
                     "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV", "PIP_USER"):
            env.pop(name, None)
        env["PYTHONPATH"] = str(self.bundle)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONIOENCODING"] = "utf-8"
        return env


# --- running ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Snapshot:
    """What the panel shows; copied out under the lock, so drawing never sees a half update."""

    running: bool
    step: str
    step_label: str
    fraction: float  # whole install, 0..1
    package: str
    file: str
    bytes: int
    total: int
    result: str  # "", ready, failed, cancelled
    message: str


class Installer:
    def __init__(self, plan: Plan, log_lines: int = 200):
        self.plan = plan
        self.cancel_event = threading.Event()
        self._lock = threading.Lock()
        self._step = ""
        self._progress = PipProgress()
        self._result = ""
        self._message = ""
        self._running = False
        self.tail: list[str] = []  # last output lines (error messages quote them)
        self._tail_size = log_lines

    # called from any thread
    def snapshot(self) -> Snapshot:
        with self._lock:
            p = self._progress
            done = 0.0
            for name, weight in STEPS:
                if name == self._step:
                    done += weight * (p.fraction if name in ("torch", "requirements") else 0.0)
                    break
                done += weight
            else:
                done = 1.0 if self._result == READY else 0.0
            return Snapshot(self._running, self._step, STEP_LABELS.get(self._step, ""), min(1.0, done),
                            p.package, p.file, p.bytes, p.total, self._result, self._message)

    def cancel(self) -> None:
        self.cancel_event.set()

    # called on the worker thread
    def run(self, repair: bool = False) -> str:
        """The whole install; returns ready, failed or cancelled (also written to the state file)."""
        layout, plan = self.plan.layout, self.plan
        layout.root.mkdir(parents=True, exist_ok=True)
        state = State(requirements_hash=requirements_hash(plan.requirements), torch_build=plan.torch.build,
                      base_python=plan.base_python, pid=os.getpid())
        with self._lock:
            self._running, self._result, self._message = True, "", ""
        try:
            with open(layout.log_file, "a", encoding="utf-8") as log:
                log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} install ({plan.torch.reason})\n")
                if repair or not self._venv_runs(log):
                    shutil.rmtree(layout.venv, ignore_errors=True)
                ensurepip = run_lines([plan.base_python, "-c", "import ensurepip"], self._remember,
                                      cancel=self.cancel_event, log=log, env=plan.environment()) == 0
                for step in plan.steps(ensurepip):
                    if step.name == "venv" and self._venv_runs(log):
                        continue
                    state.phase = step.name
                    state.save(layout.state_file)
                    with self._lock:
                        self._step, self._progress = step.name, PipProgress()
                    if step.name == "pip" and not ensurepip:
                        log.write(f"no ensurepip in {plan.base_python}: pip comes from {SIMPLE_INDEX}\n")
                        fetch_pip_wheel(layout.root / PIP_WHEEL, self.cancel_event)
                    self._run_step(step, log)
                state.phase, state.error = READY, ""
                return self._end(state, READY, "The backend is installed")
        except Cancelled:
            state.phase = CANCELLED
            return self._end(state, CANCELLED, "Cancelled; Install resumes where it stopped")
        except InstallError as err:
            state.phase, state.error = FAILED, str(err)
            return self._end(state, FAILED, str(err))
        except OSError as err:
            state.phase, state.error = FAILED, f"{type(err).__name__}: {err}"
            return self._end(state, FAILED, state.error)

    def _end(self, state: State, result: str, message: str) -> str:
        try:
            state.save(self.plan.layout.state_file)
        except OSError:
            pass
        with self._lock:
            self._running, self._result, self._message, self._step = False, result, message, ""
        return result

    def _venv_runs(self, log) -> bool:
        python = self.plan.layout.python(self.plan.machine.system)
        if not python.exists():
            return False
        code = run_lines([str(python), "-c", "import sys; print(sys.version)"], lambda _l: None,
                         cancel=self.cancel_event, log=log, env=self.plan.environment(), cwd=str(self.plan.bundle))
        return code == 0

    def _run_step(self, step: Step, log) -> None:
        """In the bundle folder: `-m backend` must find the bundle's backend, not one in Blender's cwd."""
        env, cwd = self.plan.environment(), str(self.plan.bundle)
        if step.pip:
            report = self.plan.layout.root / f"{step.name}-report.json"
            report.unlink(missing_ok=True)
            with self._lock:
                self._progress.package = RESOLVING
            code = run_lines([*step.argv, "--dry-run", "--quiet", "--report", str(report)], self._remember,
                             cancel=self.cancel_event, log=log, env=env, cwd=cwd)
            if code != 0:
                raise InstallError(self._failure(step, code))
            with self._lock:
                self._progress.expected, self._progress.package = expected_packages(report), ""
        code = run_lines(step.argv, self._on_line, cancel=self.cancel_event, log=log, env=env, cwd=cwd)
        if code != 0:
            raise InstallError(self._failure(step, code))

    def _remember(self, line: str) -> None:
        self.tail = (self.tail + [line])[-self._tail_size:]

    def _on_line(self, line: str) -> None:
        self._remember(line)
        with self._lock:
            self._progress.feed(line)

    def _failure(self, step: Step, code: int) -> str:
        errors = [line for line in self.tail if line.startswith("ERROR:") or "Error" in line]
        detail = (errors or self.tail or ["no output"])[-1]
        return f"{STEP_LABELS[step.name]} failed (exit code {code}): {detail}"


class InstallError(Exception):
    pass


def fetch_pip_wheel(target: Path, cancel: threading.Event, index: str = SIMPLE_INDEX, timeout: float = 60.0) -> None:
    """The pinned pip wheel from the index's simple page (PEP 503), checked against its pinned
    hash before it is kept; raises InstallError or Cancelled."""
    import urllib.parse
    import urllib.request

    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == PIP_WHEEL_SHA256:
        return
    import ssl

    # pip's own certificate setting (or requests'), so a proxy that pip can pass is passable here too
    cafile = os.environ.get("PIP_CERT") or os.environ.get("REQUESTS_CA_BUNDLE") or None
    context = ssl.create_default_context(cafile=cafile if cafile and os.path.isfile(cafile) else None)
    try:
        with urllib.request.urlopen(index, timeout=timeout, context=context) as page:
            html = page.read().decode("utf-8", "replace")
        match = re.search(r'href="([^"]*/' + re.escape(PIP_WHEEL) + r')(?:#[^"]*)?"', html)
        if match is None:
            raise InstallError(f"{PIP_WHEEL} is not listed on {index}")
        url = urllib.parse.urljoin(index, match.group(1))
        digest, partial = hashlib.sha256(), target.with_name(target.name + ".part")
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response, open(partial, "wb") as out:
            while chunk := response.read(1 << 16):
                if cancel.is_set():
                    raise Cancelled()
                digest.update(chunk)
                out.write(chunk)
    except OSError as err:
        raise InstallError(f"could not download pip from {index}: {err}") from None
    if digest.hexdigest() != PIP_WHEEL_SHA256:
        partial.unlink(missing_ok=True)
        raise InstallError(f"{PIP_WHEEL} from {url} does not match its pinned hash")
    os.replace(partial, target)


def base_python() -> str:
    """The interpreter that creates the venv: Blender's own Python (sys.executable inside Blender)."""
    return sys.executable
