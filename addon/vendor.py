"""Makes `<this package>.shared` importable wherever the add-on runs.

The extension zip carries a copy of the repository's `shared/` inside the package (build_addon.py
puts it there), so the normal import system finds it. Run from the repository, `addon/` sits beside
`shared/`; that folder is then registered under the same dotted name. Either way every module writes
`from ..shared import protocol`, and the add-on never puts a generic `shared` on `sys.path` where it
could collide with another add-on's.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
NAME = f"{__package__}.shared"


def _load_repository_copy() -> None:
    if NAME in sys.modules or (_HERE / "shared" / "__init__.py").is_file():
        return
    source = _HERE.parent / "shared"
    if not (source / "__init__.py").is_file():
        raise ImportError(f"the add-on's shared modules are missing: neither {_HERE / 'shared'} nor {source} exists")
    spec = importlib.util.spec_from_file_location(NAME, source / "__init__.py", submodule_search_locations=[str(source)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[NAME]
        raise


_load_repository_copy()
