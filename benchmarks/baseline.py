"""Import a module of another git revision's ``pourlit`` beside the working tree's, so a
benchmark can time before and after in one process (``--baseline REF`` of bench_sim.py and
bench_skills.py)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType


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

    def ours(name: str) -> bool:
        return name == "pourlit" or name.startswith("pourlit.")

    current = {k: v for k, v in sys.modules.items() if ours(k)}
    for k in current:
        del sys.modules[k]
    sys.path.insert(0, into)
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(into)
        for k in [k for k in sys.modules if ours(k)]:
            del sys.modules[k]
        sys.modules.update(current)
