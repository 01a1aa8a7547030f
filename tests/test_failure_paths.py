"""Failure paths: one-line errors from every command (fit and validate included), full disks
(a real tmpfs where this machine can mount one, an injected ENOSPC everywhere), output paths
checked before work, one flag that moves a run, concurrent and killed collectors."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from skill_fixtures import write_dataset

import pourlit.evaluate
from pourlit.cli import main
from pourlit.data import read_episode
from pourlit.data.folder import SUMMARY_NAME
from pourlit.errors import error_line, exit_code
from pourlit.lightning_cli import AtomicCheckpointIO
from pourlit.sim.render import write_video

ROOT = Path(__file__).resolve().parents[1]
SKILL_CKPT = ROOT / "checkpoints/skills/spirl_cl.ckpt"
RL_SMALL = [
    "--trainer.max_steps", "4", "--trainer.enable_progress_bar", "false",
    "--model.init_args.skill_ckpt", str(SKILL_CKPT),
    "--model.init_args.warmup_transitions", "4", "--model.init_args.batch_size", "8",
    "--model.init_args.q_select", "0", "--model.init_args.eval_episodes", "2",
    "--model.init_args.env", json.dumps({"max_episode_steps": 20}),
]  # fmt: skip
SHORT_COLLECT = "keep_failures: true\nenv:\n  max_episode_steps: 15\n"


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def the_error(err: str) -> str:
    """The one ``pourlit: error:`` line (log lines before it are allowed; tracebacks are not)."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("pourlit: error:")]
    assert len(lines) == 1, err
    assert err.rstrip().endswith(lines[0]), err  # the last thing printed
    return lines[0]


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "POURLIT_TORCH_THREADS": "1", "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, "-m", "pourlit.cli", *args],
        capture_output=True, text=True, timeout=timeout, env=env, check=False,
    )  # fmt: skip


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A tmpfs of ``size`` at ``path``, or skip where this machine cannot mount one."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (the injected-ENOSPC tests cover this path)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


# -- fit / validate: one line, exit 2, nothing written ------------------------------------------
@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data") / "d", episodes=6)


def skills_fit(data_dir: Path | str, run: Path, *extra: str) -> list[str]:
    return [
        "fit", "-c", str(ROOT / "configs/skills/spirl_cl.yaml"),
        "--data.init_args.data_dir", str(data_dir), "--run_dir", str(run),
        "--trainer.max_steps", "2", "--trainer.enable_progress_bar", "false", *extra,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown model option", "Option 'bogus' is not accepted"),
        ("unknown trainer option", "unrecognized arguments: --trainer.bogus"),
        ("invalid model value", "batch_size and updates_per_transition must be positive"),
        ("missing skill checkpoint", "nothing.ckpt: skill checkpoint not found"),
        ("missing config file", "nope.yaml"),
        ("run folder under a file", "run: Not a directory"),
        ("malformed config file", "bad.yaml: not valid YAML (line 2, column 1: expected the"),
        ("malformed ckpt_path", "bad.ckpt: not a Lightning checkpoint (UnpicklingError)"),
        (
            "malformed skill checkpoint",
            "bad.ckpt: not a pourlit skill checkpoint (UnpicklingError)",
        ),
    ],
)
def test_rl_fit_errors_are_one_line(tmp_path: Path, case: str, expected: str) -> None:
    run = tmp_path / "run"
    extra = {
        "unknown model option": ["--model.init_args.bogus", "1"],
        "unknown trainer option": ["--trainer.bogus", "1"],
        "invalid model value": ["--model.init_args.batch_size", "0"],
        "missing skill checkpoint": [
            "--model.init_args.skill_ckpt",
            str(tmp_path / "nothing.ckpt"),
        ],
        "missing config file": ["-c", str(tmp_path / "nope.yaml")],
        "run folder under a file": [],
        "malformed config file": ["-c", str(tmp_path / "bad.yaml")],
        "malformed ckpt_path": ["--ckpt_path", str(tmp_path / "bad.ckpt")],
        "malformed skill checkpoint": ["--model.init_args.skill_ckpt", str(tmp_path / "bad.ckpt")],
    }[case]
    (tmp_path / "bad.yaml").write_text("a: [\n")
    (tmp_path / "bad.ckpt").write_text("garbage\n")
    if case == "run folder under a file":
        (tmp_path / "file").write_text("x")
        run = tmp_path / "file" / "run"
    args = ["fit", "-c", str(ROOT / "configs/rl/default.yaml"), *RL_SMALL, "--run_dir", str(run)]
    rc, _, err = run_cli([*args, *extra])
    assert rc == 2
    line = the_error(err)
    assert expected in line, line
    assert not run.exists() or not any(run.rglob("*.ckpt"))


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing data folder", "missing: rollout data folder does not exist"),
        ("empty data folder", "empty: no rollout files"),
        ("malformed rollout file", "rollout_00002.h5: cannot read rollout file"),
        ("invalid data value", "batch_size must be >= 1, got 0"),
    ],
)
def test_skill_fit_and_validate_errors_are_one_line(
    small_data: Path, tmp_path: Path, case: str, expected: str
) -> None:
    data: Path = {
        "missing data folder": tmp_path / "missing",
        "empty data folder": tmp_path / "empty",
        "malformed rollout file": tmp_path / "bad",
        "invalid data value": small_data,
    }[case]
    if case == "empty data folder":
        data.mkdir()
    if case == "malformed rollout file":
        shutil.copytree(small_data, data)
        (data / "rollout_00002.h5").write_bytes(b"\x89HDF\r\n" + b"\0" * 100)
    extra = ["--data.init_args.batch_size", "0"] if case == "invalid data value" else []
    for command in ("fit", "validate"):
        run = tmp_path / f"run_{command}"
        args = skills_fit(data, run, *extra)
        args[0] = command
        rc, _, err = run_cli(args)
        assert rc == 2, (command, err)
        assert expected in the_error(err), (command, err)
        assert not run.exists() or not any(run.rglob("*.ckpt"))


def test_help_and_print_config_still_work(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc, contextlib.redirect_stdout(io.StringIO()) as out:
        main(["fit", "-c", str(ROOT / "configs/rl/default.yaml"), "--print_config"])
    assert exc.value.code == 0 and "class_path: pourlit.rl" in out.getvalue()
    with pytest.raises(SystemExit) as exc, contextlib.redirect_stdout(io.StringIO()) as help_:
        main(["fit", "--help"])
    assert exc.value.code == 0 and "--run_dir" in help_.getvalue()


def test_debug_shows_the_traceback(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("POURLIT_DEBUG", "1")
    with pytest.raises(ValueError, match="missing: rollout data folder does not exist"):
        main(skills_fit(tmp_path / "missing", tmp_path / "run"))


# -- one flag moves a whole run --------------------------------------------------------------------
def test_run_dir_moves_a_whole_rl_run(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the config's own folders (runs/rl/default) would land here
    run = tmp_path / "elsewhere" / "rl"
    args = ["fit", "-c", str(ROOT / "configs/rl/default.yaml"), *RL_SMALL, "--run_dir", str(run)]
    args += ["--trainer.limit_train_batches", "4"]  # an "epoch": validation, both checkpoints
    rc, _, err = run_cli(args)
    assert rc == 0, err
    assert not (tmp_path / "runs").exists()
    names = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}
    assert {"checkpoints/last.ckpt", "checkpoints/best.ckpt"} <= names
    assert "logs/version_0/config.yaml" in names and "logs/version_0/metrics.csv" in names
    saved = (run / "logs/version_0/config.yaml").read_text()
    assert f"default_root_dir: {run}" in saved


def test_run_dir_moves_a_whole_skill_run(small_data: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "elsewhere" / "skills"
    args = skills_fit(small_data, run, "--data.init_args.batch_size", "4")
    args += ["--model.init_args.hidden", "16", "--data.init_args.windows_per_epoch", "8"]
    rc, _, err = run_cli(args)
    assert rc == 0, err
    assert not (tmp_path / "runs").exists()
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and any(n.startswith("best-") for n in ckpts), ckpts
    assert (run / "logs/version_0/config.yaml").is_file()


# -- full disk: checkpoints ------------------------------------------------------------------------
def test_failed_checkpoint_write_keeps_the_previous_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "ckpts" / "last.ckpt"
    io_ = AtomicCheckpointIO()
    io_.save_checkpoint({"step": 1}, path)
    before = path.read_bytes()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as exc:
        io_.save_checkpoint({"step": 2, "big": torch.zeros(1000)}, path)
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == str(path)
    assert path.read_bytes() == before  # the previous last.ckpt is intact
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary file
    assert error_line(exc.value) == f"{path}: no space left on device"
    assert exit_code(exc.value) == 1
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}


@pytest.mark.slow
def test_rl_fit_on_a_full_disk(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "600k") as disk:
        done = cli("fit", "-c", str(ROOT / "configs/rl/default.yaml"), *RL_SMALL,
                   "--run_dir", str(disk / "run"))  # fmt: skip
        assert done.returncode == 1, done.stderr[-3000:]
        line = the_error(done.stderr)
        assert line.startswith(f"pourlit: error: {disk / 'run/checkpoints'}/")
        assert line.endswith(".ckpt: no space left on device")
        assert not list(disk.rglob("*.ckpt")) and not list(disk.rglob(".*tmp*"))


def test_skill_fit_on_a_full_disk(small_data: Path, tmp_path: Path, monkeypatch) -> None:
    """Lightning's checkpoint write failing in a skill run (injected ENOSPC; the RL run's test
    above fills a real tmpfs)."""

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    run = tmp_path / "run"
    args = skills_fit(small_data, run, "--data.init_args.batch_size", "4")
    args += ["--model.init_args.hidden", "16", "--data.init_args.windows_per_epoch", "8"]
    monkeypatch.setattr(os, "fsync", full)
    rc, _, err = run_cli(args)
    monkeypatch.undo()
    assert rc == 1, err
    line = the_error(err)
    assert line.startswith(f"pourlit: error: {run / 'checkpoints'}/"), line
    assert line.endswith(".ckpt: no space left on device"), line
    assert not list(run.rglob("*.ckpt")) and not list(run.rglob(".*tmp*"))


# -- full disk: collect ----------------------------------------------------------------------------
@pytest.mark.slow
def test_collect_on_a_full_disk(tmp_path: Path) -> None:
    cfg = tmp_path / "short.yaml"
    cfg.write_text(SHORT_COLLECT.replace("15", "120"))
    with tmpfs(tmp_path / "disk", "250k") as disk:
        out = disk / "d"
        done = cli("collect", "-c", str(cfg), "--episodes", "8", "--num-envs", "1",
                   "--out", str(out), "-q")  # fmt: skip
        assert done.returncode == 1, done.stderr[-3000:]  # not a crash (139)
        line = the_error(done.stderr)
        assert line.startswith(f"pourlit: error: {out}/rollout_")
        assert line.endswith(".h5: no space left on device")
        files = sorted(out.glob("rollout_*.h5"))
        assert files, "the disk should hold at least one file"
        for f in files:
            assert read_episode(f).length == 120  # every file written before it is intact
        assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


# -- output paths ----------------------------------------------------------------------------------
def test_evaluate_checks_json_before_running(tmp_path: Path, monkeypatch) -> None:
    def must_not_run(*args, **kwargs):
        raise AssertionError("evaluation ran before the output path was checked")

    monkeypatch.setattr(pourlit.evaluate, "evaluate", must_not_run)
    (tmp_path / "file").write_text("x")
    bad = tmp_path / "file" / "m.json"
    rc, out, err = run_cli(["evaluate", "--policy", "expert", "--json", str(bad)])
    assert rc == 2 and out == ""
    assert the_error(err).startswith(f"pourlit: error: {bad}: --json not writable (")
    rc, _, err = run_cli(["evaluate", "--policy", "expert", "--json", str(tmp_path)])
    assert rc == 2 and "--json path is a folder" in the_error(err)


def test_evaluate_prints_metrics_when_the_json_write_fails(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "m.json"

    def fake_evaluate(*args, report, **kwargs):
        result = {"success_rate": 0.5, "episodes": 2}
        report(result)
        target.mkdir()  # the path turns unwritable while the evaluation runs
        return result

    monkeypatch.setattr(pourlit.evaluate, "evaluate", fake_evaluate)
    rc, out, err = run_cli(["evaluate", "--policy", "expert", "--json", str(target)])
    assert json.loads(out) == {"success_rate": 0.5, "episodes": 2}  # the work is not lost
    assert rc == 2 and str(target) in the_error(err)


def test_evaluate_json_on_a_full_disk(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "m.json"

    def fake_evaluate(*args, report, **kwargs):
        report({"success_rate": 0.5})
        return {"success_rate": 0.5}

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pourlit.evaluate, "evaluate", fake_evaluate)
    monkeypatch.setattr(os, "fsync", full)
    rc, out, err = run_cli(["evaluate", "--policy", "expert", "--json", str(target)])
    monkeypatch.undo()
    assert json.loads(out) == {"success_rate": 0.5}
    assert rc == 1 and the_error(err) == f"pourlit: error: {target}: no space left on device"
    assert list(tmp_path.iterdir()) == []  # neither a partial m.json nor a temporary file


def test_evaluate_prints_metrics_when_the_video_write_fails(tmp_path: Path, monkeypatch) -> None:
    video = tmp_path / "v.mp4"

    def fake_episodes(env, call, begin, episodes, seed, frames, progress):
        frames.extend(np.zeros((8, 240, 320, 3), np.uint8))
        video.mkdir()  # the path turns unwritable while the evaluation runs
        return {"success_rate": 1.0, "episodes": 1}

    monkeypatch.setattr(pourlit.evaluate, "run_episodes", fake_episodes)
    args = ["evaluate", "--policy", "expert", "--episodes", "1", "--num-envs", "1", "-q"]
    rc, out, err = run_cli([*args, "--video", str(video)])
    result = json.loads(out)  # the work is not lost
    assert result["success_rate"] == 1.0 and result["video"] == str(video)
    assert rc == 2 and the_error(err).startswith(f"pourlit: error: {video}: ")
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]  # no temporary video left


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_video_write_on_a_full_disk(tmp_path: Path, suffix: str) -> None:
    frames = np.random.default_rng(0).integers(0, 255, (20, 240, 320, 3), dtype=np.uint8)
    with tmpfs(tmp_path / "disk", "20k") as disk:
        with pytest.raises(OSError) as exc:  # ffmpeg itself ignores its write errors
            write_video(list(frames), disk / f"v{suffix}")
        assert exc.value.errno == errno.ENOSPC and exc.value.filename == str(disk / f"v{suffix}")
        assert error_line(exc.value) == f"{disk / f'v{suffix}'}: no space left on device"
        assert list(disk.iterdir()) == []  # no partial video, no temporary file


def test_export_errors_are_one_line(tmp_path: Path, monkeypatch) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_text("garbage\n")
    rc, _, err = run_cli(["export", str(bad), str(tmp_path / "out.ckpt")])
    assert (
        rc == 2
        and the_error(err) == f"pourlit: error: {bad}: not a pourlit checkpoint (ValueError)"
    )
    (tmp_path / "folder").mkdir()
    rc, _, err = run_cli(["export", str(bad), str(tmp_path / "folder")])  # checked before loading
    assert rc == 2 and "folder: dst path is a folder" in the_error(err)
    rc, _, err = run_cli(["evaluate", "--ckpt", str(bad), "--episodes", "1"])
    assert (
        rc == 2
        and the_error(err) == f"pourlit: error: {bad}: not a pourlit checkpoint (ValueError)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.ckpt", "folder"]


def test_export_on_a_full_disk(tmp_path: Path, monkeypatch) -> None:
    src = ROOT / "checkpoints/skills/flat_prior.ckpt"

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    dst = tmp_path / "out" / "small.ckpt"
    monkeypatch.setattr(os, "fsync", full)
    rc, _, err = run_cli(["export", str(src), str(dst)])
    monkeypatch.undo()
    assert rc == 1 and the_error(err) == f"pourlit: error: {dst}: no space left on device"
    assert list(dst.parent.iterdir()) == []
    with tmpfs(tmp_path / "disk", "100k") as disk:  # torch's own writer: a RuntimeError
        rc, _, err = run_cli(["export", str(src), str(disk / "small.ckpt")])
        assert rc == 1
        assert the_error(err) == f"pourlit: error: {disk / 'small.ckpt'}: no space left on device"
        assert list(disk.iterdir()) == []


@pytest.mark.parametrize("command", ["collect", "sweep"])
def test_malformed_yaml_is_one_line(tmp_path: Path, command: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [\n")
    rc, _, err = run_cli([command, "-c", str(bad)])
    assert rc == 2 and the_error(err) == (
        f"pourlit: error: {bad}: not valid YAML (line 2, column 1: expected the node content, "
        "but found '<stream end>')"
    )


@pytest.mark.parametrize("command", ["report", "scene"])
def test_output_of_report_and_scene_checked_first(tmp_path: Path, command: str) -> None:
    (tmp_path / "file").write_text("x")
    bad = tmp_path / "file" / "out.md"
    args = {
        "report": ["report", "--run", str(tmp_path), "-o", str(bad)],
        "scene": ["scene", "-o", str(bad)],
    }
    rc, _, err = run_cli(args[command])
    assert rc == 2 and the_error(err).startswith(f"pourlit: error: {bad}: -o not writable (")


# -- collectors sharing a folder, killed collectors ------------------------------------------------
def test_concurrent_collectors_share_a_folder(tmp_path: Path) -> None:
    cfg = tmp_path / "short.yaml"
    cfg.write_text(SHORT_COLLECT)
    out = tmp_path / "shared"
    env = {**os.environ, "POURLIT_TORCH_THREADS": "1"}
    cmd = [sys.executable, "-m", "pourlit.cli", "collect", "-c", str(cfg), "--out", str(out),
           "--episodes", "5", "--num-envs", "1", "-q"]  # fmt: skip
    procs = [subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    files = sorted(out.glob("rollout_*.h5"))
    assert [f.name for f in files] == [f"rollout_{i:05d}.h5" for i in range(10)]
    seeds = {read_episode(f).attrs["seed"] for f in files}
    assert len(seeds) == 10  # different episodes, not two copies
    summary = json.loads((out / SUMMARY_NAME).read_text())
    assert sorted(summary["rollouts"]) == [f.name for f in files]
    a, b = summary["runs"]
    assert (a["status"], a["written"], b["status"], b["written"]) == ("finished", 5, "finished", 5)
    overlapped = (
        a["started_at"] < b["started_at"] + b["wall_seconds"]
        and b["started_at"] < a["started_at"] + a["wall_seconds"]
    )
    if overlapped:  # (on a loaded machine one may finish before the other starts)
        assert {a["slot"], b["slot"]} == {0, 1}
    assert summary["files"] == 10 and summary["episodes_written"] == 10


def _hold_slot(folder: Path, rank: int) -> tuple[subprocess.Popen, int]:
    """Another live collector of ``rank`` in ``folder``: a process holding a slot lock (until
    its stdin closes), and the slot it got."""
    code = (
        "import sys; from pourlit.data.folder import FolderLock; "
        f"lock = FolderLock({str(folder)!r}); print(lock.claim_slot({rank}), flush=True); "
        "sys.stdin.read()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    return proc, int(proc.stdout.readline())


def test_ranked_collectors_keep_their_seeds_whichever_starts_first(tmp_path: Path) -> None:
    """``make demo``'s two collectors (--rank 0/1) record the episodes of (seed, rank) alone,
    not ones that depend on which process took the folder's first slot."""
    cfg = tmp_path / "short.yaml"
    cfg.write_text(SHORT_COLLECT)
    args = ["--episodes", "2", "--num-envs", "1", "--rank", "1", "--world-size", "2", "-q"]
    assert cli("collect", "-c", str(cfg), "--out", str(tmp_path / "alone"), *args).returncode == 0
    shared = tmp_path / "shared"
    shared.mkdir()
    first, slot = _hold_slot(shared, rank=0)  # rank 0 started first
    second, slot_again = _hold_slot(shared, rank=0)  # a second collector of rank 0
    try:
        assert (slot, slot_again) == (0, 1)  # one rank's concurrent collectors: distinct slots
        assert cli("collect", "-c", str(cfg), "--out", str(shared), *args).returncode == 0
    finally:
        first.communicate("")
        second.communicate("")
    runs = json.loads((shared / SUMMARY_NAME).read_text())["runs"]
    assert [r["slot"] for r in runs] == [0]  # rank 1 took its own slot 0

    def seeds(folder: Path) -> list[int]:
        return [int(read_episode(f).attrs["seed"]) for f in sorted(folder.glob("rollout_*.h5"))]

    assert len(seeds(shared)) == 2 and seeds(shared) == seeds(tmp_path / "alone")


def test_a_ranks_file_names_do_not_depend_on_the_other_ranks_progress(
    tmp_path: Path, monkeypatch
) -> None:
    """Rank 1 names its k-th episode 1 + 2k even when rank 0 has raced ahead in the folder
    meanwhile: the skill datamodule splits episodes in name order, so names that followed the
    other collector's progress gave the same command a different training split each run."""
    import shutil

    import pourlit.collect

    real_write = pourlit.collect.write_episode

    def write_then_rank0_races_ahead(path, **episode):
        real_write(path, **episode)
        ahead = path.parent / "rollout_00010.h5"  # as if rank 0 had written up to index 10
        if not ahead.exists():
            shutil.copy(path, ahead)

    monkeypatch.setattr(pourlit.collect, "write_episode", write_then_rank0_races_ahead)
    cfg = tmp_path / "short.yaml"
    cfg.write_text(SHORT_COLLECT)
    out = tmp_path / "d"
    args = ["--episodes", "3", "--num-envs", "1", "--rank", "1", "--world-size", "2", "-q"]
    rc, _, err = run_cli(["collect", "-c", str(cfg), "--out", str(out), *args])
    assert rc == 0, err
    names = sorted(f.name for f in out.glob("rollout_*.h5"))
    assert names == ["rollout_00001.h5", "rollout_00003.h5", "rollout_00005.h5", "rollout_00010.h5"]
    # a rerun into the folder continues after its highest index, with this rank's parity
    monkeypatch.setattr(pourlit.collect, "write_episode", real_write)
    rc, _, err = run_cli(["collect", "-c", str(cfg), "--out", str(out), *args[:2], *args[4:]])
    assert rc == 0, err
    new = sorted(f.name for f in out.glob("rollout_*.h5") if f.name not in names)
    assert new == ["rollout_00011.h5", "rollout_00013.h5", "rollout_00015.h5"]


def test_summary_covers_every_file_after_reruns_and_a_kill(tmp_path: Path) -> None:
    cfg = tmp_path / "short.yaml"
    cfg.write_text(SHORT_COLLECT)
    out = tmp_path / "d"
    assert (
        cli("collect", "-c", str(cfg), "--out", str(out), "--episodes", "2", "-q").returncode == 0
    )
    env = {**os.environ, "POURLIT_TORCH_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pourlit.cli", "collect", "-c", str(cfg), "--out", str(out),
         "--episodes", "500", "--num-envs", "1", "-q"],
        env=env, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 300
    while len(list(out.glob("rollout_*.h5"))) < 6 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # a temporary file of the killed writer, as a kill mid-write leaves one
    (out / f".rollout_99999.h5.tmp-{proc.pid}").write_bytes(b"partial")
    files = sorted(f.name for f in out.glob("rollout_*.h5"))
    assert len(files) >= 6
    for f in files:
        read_episode(out / f)  # only complete files
    rc, _, err = run_cli(["inspect", str(out)])  # reconciles summary.json with the files
    assert rc == 0, err
    summary = json.loads((out / SUMMARY_NAME).read_text())
    assert sorted(summary["rollouts"]) == files
    assert [r["status"] for r in summary["runs"]] == ["finished", "running"]  # the killed one
    # a rerun continues the numbering, removes the dead writer's temporary file, and its
    # summary covers every file of the three runs
    assert (
        cli("collect", "-c", str(cfg), "--out", str(out), "--episodes", "2", "-q").returncode == 0
    )
    after = sorted(f.name for f in out.glob("rollout_*.h5"))
    assert len(after) == len(files) + 2 and after[: len(files)] == files
    summary = json.loads((out / SUMMARY_NAME).read_text())
    assert sorted(summary["rollouts"]) == after and len(summary["runs"]) == 3
    assert summary["files"] == len(after)
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow
def test_rl_run_killed_with_sigkill_resumes_bit_identical(tmp_path: Path) -> None:
    """kill -9 mid-run, then ``--ckpt_path last``: the same weights and optimiser state as an
    uninterrupted run (the in-process resume tests check the same for every variant)."""
    env = {**os.environ, "POURLIT_TORCH_THREADS": "1", "WANDB_MODE": "offline"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")])

    def fit(run: Path, *extra: str) -> int:
        args = [*RL_SMALL, "--trainer.max_steps", "12", "--trainer.limit_train_batches", "6"]
        args += ["--model.init_args.eval_episodes", "1", "--run_dir", str(run), *extra]
        done = subprocess.run(
            [sys.executable, "-m", "pourlit.cli", "fit", "-c", str(ROOT / "configs/rl/default.yaml"), *args],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        return done.returncode

    assert fit(tmp_path / "full") == 0
    killer = json.dumps({"class_path": "skill_fixtures.SigkillAtStep", "init_args": {"step": 9}})
    assert fit(tmp_path / "run", "--trainer.callbacks+", killer) == -signal.SIGKILL
    saved = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=False)
    assert 0 < saved["global_step"] < 9  # the last epoch-end checkpoint before the kill
    assert fit(tmp_path / "run", "--ckpt_path", "last") == 0
    a, b = (
        torch.load(tmp_path / r / "checkpoints/last.ckpt", weights_only=False)
        for r in ("full", "run")
    )
    assert a["global_step"] == b["global_step"] == 12
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    for opt_a, opt_b in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for sa, sb in zip(opt_a["state"].values(), opt_b["state"].values(), strict=True):
            for key in sa:
                assert torch.equal(torch.as_tensor(sa[key]), torch.as_tensor(sb[key])), key
