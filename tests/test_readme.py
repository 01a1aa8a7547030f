"""The README's commands are accepted as written: every ``pourlit ...`` line of its bash blocks
parses (LightningCLI commands resolve their whole config), and bare ``pourlit`` is used only
after the README says to activate the venv that ``make setup`` installs it into."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from pourlit.cli import LIGHTNING_COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
COMMANDS = [
    shlex.split(line, comments=True)[1:]
    for block in BLOCKS
    for line in block.splitlines()
    if line.startswith("pourlit ")
]


def test_readme_has_commands() -> None:
    assert len(COMMANDS) >= 15
    assert {c[0] for c in COMMANDS} >= {"collect", "inspect", "render", "fit", "evaluate"}


def test_bare_pourlit_only_after_activation() -> None:
    code = "\n".join(BLOCKS)
    first_bare = re.search(r"^pourlit ", code, flags=re.M)
    assert first_bare is not None
    assert "source .venv/bin/activate" in code[: first_bare.start()]


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(c)[:60] for c in COMMANDS])
def test_readme_command_parses(args: list[str], monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # the README's paths are relative to the repository
    if args[0] in LIGHTNING_COMMANDS:
        out = io.StringIO()
        with pytest.raises(SystemExit) as exc, contextlib.redirect_stdout(out):
            main([*args, "--print_config"])
        assert exc.value.code == 0 and "model:" in out.getvalue()
    else:
        build_parser().parse_args(args)  # argparse exits (code 2) on anything it rejects


def test_readme_reads_only_files_an_earlier_command_writes() -> None:
    """In the order written: every ``--eval LABEL=PATH`` was written by an earlier
    ``--json PATH``, every ``--data.init_args.data_dir`` by an earlier ``collect --out``."""
    written: set[str] = set()
    for args in COMMANDS:
        for flag, value in zip(args, args[1:], strict=False):
            if flag == "--eval":
                assert value.partition("=")[2] in written, args
            if flag == "--data.init_args.data_dir":
                assert value in written, args
        for flag, value in zip(args, args[1:], strict=False):
            if flag in ("--json", "--out"):
                written.add(value)


def test_makefile_moves_every_fit_with_run_dir() -> None:
    """Every ``pourlit fit`` the Makefile runs puts its whole run under one ``--run_dir``, not
    the trainer, logger and checkpoint folders flag by flag."""
    make = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    fits = [ln for ln in make.splitlines() if "$(DEMO_FIT)" in ln or "pourlit fit" in ln]
    fits = [ln for ln in fits if not ln.startswith(("#", "DEMO_FIT"))]
    assert len(fits) >= 5, fits
    for line in fits:
        assert "--run_dir" in line, line
        assert "default_root_dir" not in line and "dirpath" not in line, line
