"""The one error tail of every command-line entry point (shared/cli.py)."""
import re
from pathlib import Path

from shared.cli import run_command
from shared.errors import CODES, BackendError

ROOT = Path(__file__).resolve().parents[2]


def test_run_command_reports_the_code_and_exits_with_its_status(capsys):
    def fails() -> int:
        raise BackendError("output_unwritable", "cannot write /x.glb")

    def interrupted() -> int:
        raise KeyboardInterrupt

    assert run_command(lambda: 0) == 0
    assert run_command(fails) == CODES["output_unwritable"].exit_status
    assert capsys.readouterr().err == "error [output_unwritable] cannot write /x.glb\n"
    assert run_command(interrupted, "stopped") == 130
    assert capsys.readouterr().err == "stopped\n"


def test_no_entry_point_copies_the_error_tail():
    tail = re.compile(r"except BackendError as (\w+):\n(?:.*\n){0,2}?\s*return \1\.exit_status")
    copies = {str(p.relative_to(ROOT)) for folder in ("backend", "blender_render")
              for p in (ROOT / folder).rglob("*.py") if tail.search(p.read_text())}
    assert not copies, sorted(copies)
