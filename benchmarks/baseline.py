"""Import a module of another git revision's ``pourlit`` beside the working tree's, so a
benchmark can time before and after in one process (``--baseline REF`` of bench_sim.py and
bench_skills.py)."""

from __future__ import annotations

import contextlib
import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

_REVISIONS: dict[int, dict[str, ModuleType]] = {}  # id(module) -> its revision's modules


def _ours(name: str) -> bool:
    return name == "pourlit" or name.startswith("pourlit.")


def import_at_revision(ref: str, module: str, into: str) -> ModuleType:
    """Module ``module`` (e.g. ``pourlit.sim.env``) of the ``pourlit`` package at git revision
    ``ref``, extracted into the folder ``into``: its modules are loaded with the working tree's
    ``pourlit`` modules set aside, then both are put back as they were (the baseline's functions
    keep their own module globals, so each side runs its own code). A revision git cannot
    archive raises ``subprocess.CalledProcessError``."""
    repo = Path(__file__).resolve().parent.parent
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", ref, "pourlit"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)

    current = {k: v for k, v in sys.modules.items() if _ours(k)}
    for k in current:
        del sys.modules[k]
    sys.path.insert(0, into)
    try:
        mod = importlib.import_module(module)
        _REVISIONS[id(mod)] = {k: v for k, v in sys.modules.items() if _ours(k)}
        return mod
    finally:
        sys.path.remove(into)
        for k in [k for k in sys.modules if _ours(k)]:
            del sys.modules[k]
        sys.modules.update(current)


@contextlib.contextmanager
def swapped_in(mod: ModuleType) -> Iterator[None]:
    """Within the block, ``pourlit`` in ``sys.modules`` is the revision ``mod`` came from
    (needed where a name is resolved at run time, e.g. Lightning checking a checkpoint's class
    path while loading it)."""
    current = {k: v for k, v in sys.modules.items() if _ours(k)}
    for k in current:
        del sys.modules[k]
    sys.modules.update(_REVISIONS[id(mod)])
    try:
        yield
    finally:
        for k in [k for k in sys.modules if _ours(k)]:
            del sys.modules[k]
        sys.modules.update(current)
