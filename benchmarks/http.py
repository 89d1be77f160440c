"""HTTP API speed on loopback: requests/s of health and info, the latency a job gains through HTTP
over the JSON-lines server (preview engine), and 100 concurrent clients (bounded: each sends a fixed
number of requests) with p50/p99 times.

    .venv/bin/python -m benchmarks.http [--jobs 3] [--clients 100]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image

from .common import print_table

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"face_count": 500, "texture": False, "texture_resolution": 256}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _image(folder: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    from tests.backend.synth import striped_ellipse

    rgb, _ = striped_ellipse(96)
    path = folder / "ellipse.png"
    Image.fromarray(rgb).save(path)
    return path


def start_http(folder: Path, max_jobs: int) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--http", f"127.0.0.1:{port}", "--engine",
                             "preview", "--no-web", "--data-dir", str(folder / "data"), "--max-jobs", str(max_jobs)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError("the HTTP server did not start")


def rate(client: httpx.Client, path: str, seconds: float = 3.0) -> float:
    client.get(path)
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        assert client.get(path).status_code == 200
        count += 1
    return count / (time.perf_counter() - t0)


def http_job(client: httpx.Client, image: Path, out: Path) -> tuple[float, float]:
    """(seconds from upload to the GLB on disk here, seconds the server says the job ran)."""
    t0 = time.perf_counter()
    job = client.post("/v1/jobs", files={"image": (image.name, image.read_bytes())},
                      data={"settings": json.dumps(SMALL)}).json()["job"]
    with client.stream("GET", f"/v1/jobs/{job}/events", timeout=600) as r:
        for line in r.iter_lines():
            if line.startswith("data:") and json.loads(line[5:])["event"] == "done":
                ran = json.loads(line[5:])["seconds"]
                break
    out.write_bytes(client.get(f"/v1/jobs/{job}/result").content)
    return time.perf_counter() - t0, ran


class LinesServer:
    """`python -m backend serve` driven over its pipes, one job at a time."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--engine", "preview"], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, bufsize=1)
        self.proc.stdout.readline()  # ready
        self.count = 0

    def job(self, image: Path, out: Path) -> tuple[float, float]:
        """(seconds from request to `done`, seconds the server says the job ran)."""
        self.count += 1
        t0 = time.perf_counter()
        self.proc.stdin.write(json.dumps({"op": "generate", "job": f"j{self.count}", "image": str(image),
                                          "output": str(out), "settings": SMALL}) + "\n")
        self.proc.stdin.flush()
        while (event := json.loads(self.proc.stdout.readline()))["event"] != "done":
            pass
        return time.perf_counter() - t0, event["seconds"]

    def close(self) -> None:
        self.proc.stdin.write('{"op":"shutdown"}\n')
        self.proc.stdin.flush()
        self.proc.wait(60)


def crowd(url: str, image: Path, clients: int, requests_each: int) -> dict[str, list[float]]:
    """`clients` threads at once: each submits a job (then cancels it) and makes `requests_each`
    GETs (health, info, its job's state)."""
    times: dict[str, list[float]] = {"submit": [], "get": []}
    lock, barrier = threading.Lock(), threading.Barrier(clients)
    data = image.read_bytes()

    def one() -> None:
        with httpx.Client(base_url=url, timeout=300) as c:
            barrier.wait()
            t0 = time.perf_counter()
            r = c.post("/v1/jobs", files={"image": (image.name, data)}, data={"settings": json.dumps(SMALL)})
            submit = time.perf_counter() - t0
            job = r.json()["job"]
            gets = []
            for i in range(requests_each):
                t0 = time.perf_counter()
                c.get(("/v1/health", "/v1/info", f"/v1/jobs/{job}")[i % 3]).raise_for_status()
                gets.append(time.perf_counter() - t0)
            c.delete(f"/v1/jobs/{job}")
        with lock:
            times["submit"].append(submit)
            times["get"] += gets

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    return times


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--requests", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        image = _image(folder)
        proc, url = start_http(folder, max_jobs=args.clients + 8)
        lines = LinesServer()
        try:
            with httpx.Client(base_url=url, timeout=600) as c:
                rows = [("GET /v1/health", f"{rate(c, '/v1/health'):.0f} req/s"),
                        ("GET /v1/info", f"{rate(c, '/v1/info'):.0f} req/s")]
                http_job(c, image, folder / "warm.glb")  # both engines warm (mesh workers started)
                lines.job(image, folder / "warm-lines.glb")
                via_http, via_lines = [], []
                for i in range(args.jobs):  # alternate, so a busy machine slows both alike
                    via_lines.append(lines.job(image, folder / f"l{i}.glb"))
                    via_http.append(http_job(c, image, folder / f"h{i}.glb"))
            load = crowd(url, image, args.clients, args.requests)
        finally:
            lines.close()
            proc.kill()
            proc.wait(30)
    h, l = statistics.median(t for t, _ in via_http), statistics.median(t for t, _ in via_lines)
    # the jobs themselves vary by seconds on a busy machine: each door's cost is its total minus
    # the time the job ran inside the server
    h_door = statistics.median(t - ran for t, ran in via_http)
    l_door = statistics.median(t - ran for t, ran in via_lines)
    rows += [(f"preview job, JSON lines (median of {args.jobs})", f"{l:.2f} s"),
             (f"preview job, HTTP upload+SSE+download (median of {args.jobs})", f"{h:.2f} s"),
             ("front door: JSON lines (total - job time)", f"{l_door * 1000:.0f} ms"),
             ("front door: HTTP (total - job time)", f"{h_door * 1000:.0f} ms"),
             ("added by HTTP", f"{(h_door - l_door) * 1000:+.0f} ms"),
             (f"{args.clients} clients: submit p50 / p99", f"{pct(load['submit'], .5):.0f} / {pct(load['submit'], .99):.0f} ms"),
             (f"{args.clients} clients x {args.requests} GETs: p50 / p99",
              f"{pct(load['get'], .5):.0f} / {pct(load['get'], .99):.0f} ms")]
    print_table("HTTP API on loopback (benchmarks/http.py)", rows, ("measure", "value"))


if __name__ == "__main__":
    main()
