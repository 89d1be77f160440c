"""A persistent render worker: reads one task per line on stdin, answers one JSON line each.

    python -m blender_render.worker            (the bpy module)
    blender -b -P blender_render/worker.py --  (a Blender executable)

Started by the batch driver. bpy is imported once and the scene is reset in-process between
objects, which saves the interpreter start, `import bpy` and Cycles start-up that every public
batch script pays per object. Replies go to a private copy of stdout; everything Blender and
the importers print is sent to stderr, which the driver keeps in a per-worker log file.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a file by `blender -b -P`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from shared.lifetime import die_with_parent

    die_with_parent(int(os.environ.get("BLENDER_RENDER_PARENT", "0")))  # a killed batch leaves no orphans
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # Blender's C-level prints now land in the log, not in the reply stream

    def reply(**message) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    import bpy  # noqa: F401  (imported first: pymeshlab before bpy breaks bpy)

    from shared.errors import BackendError

    from blender_render.checks import ChecksFailed
    from blender_render.options import RenderOptions
    from blender_render.render_views import render_object

    reply(event="ready", pid=os.getpid(), blender=bpy.app.version_string)
    for line in sys.stdin:
        if not line.strip():
            continue
        task = json.loads(line)
        start = time.perf_counter()
        print(f"--- task {task['id']} attempt {task.get('attempt', 1)}: {task['input']}", file=sys.stderr, flush=True)
        try:
            result = render_object(task["input"], task["out"], RenderOptions.from_dict(task["options"]))
            reply(event="result", id=task["id"], status="ok", seconds=round(time.perf_counter() - start, 3),
                  views=result.views, warnings=result.warnings, committed=result.committed)
        except (BackendError, ChecksFailed) as exc:
            reply(event="result", id=task["id"], status="failed", seconds=round(time.perf_counter() - start, 3),
                  error={"code": exc.code, "message": str(exc) if isinstance(exc, ChecksFailed) else exc.message})
        except Exception as exc:  # a bug or a Blender error we did not foresee: report, keep serving
            traceback.print_exc()
            reply(event="result", id=task["id"], status="failed", seconds=round(time.perf_counter() - start, 3),
                  error={"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"})
    reply(event="bye")
    return 0


if __name__ == "__main__":
    sys.exit(main())
