"""``pourlit sweep`` on Ray Tune: a tiny sweep killed mid-way and resumed finishes without
repeating its finished trials and writes the table and curves; bad sweep configs fail before
any trial starts, with one line."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pourlit.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "model.init_args.max_env_steps": 300,
    "model.init_args.warmup_transitions": 4,
    "model.init_args.batch_size": 8,
    "model.init_args.eval_episodes": 1,
    "model.init_args.q_select": 0,
    "model.init_args.env": {"max_episode_steps": 20},
    "trainer.limit_train_batches": 10,
}


def write_sweep(path: Path, **overrides) -> Path:
    cfg = {
        "name": "tiny",
        "out": str(path.parent / "out"),
        "base": str(ROOT / "configs/rl/default.yaml"),
        "space": {"seed": {"grid": [0, 1, 2]}},
        "fixed": TINY,
        "evaluate": {"episodes": 2, "ckpt": "last"},
        "max_concurrent": 1,
        **overrides,
    }
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def kill_processes_with(marker: str) -> None:
    """SIGKILL every process whose environment holds ``marker`` (Linux /proc): the Ray a
    killed sweep started, without ``ray stop --force``, which stops every Ray on the machine
    (it killed a researcher's sweep running beside the test suite)."""
    for env_file in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in env_file.read_bytes().split(b"\0"):
                os.kill(int(env_file.parent.name), signal.SIGKILL)
        except (OSError, ValueError):  # gone, or not ours to read
            continue


def run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    return rc, err.getvalue()


@pytest.mark.slow
def test_killed_sweep_resumes_without_repeating_finished_trials(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    cfg = write_sweep(tmp_path / "tiny.yaml")
    runs = tmp_path / "out/tiny/runs"
    marker = f"POURLIT_TEST_SWEEP={tmp_path.name}-{os.getpid()}"  # inherited by its Ray
    env = {**os.environ, "POURLIT_TORCH_THREADS": "1", "WANDB_MODE": "offline"}
    env |= dict([marker.split("=")])
    cmd = [sys.executable, "-m", "pourlit.cli", "sweep", "-c", str(cfg)]
    log = (tmp_path / "sweep.log").open("w")
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True,
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.time() + 600
    while not (runs / "seed0/eval.json").is_file() and time.time() < deadline:
        assert proc.poll() is None, (tmp_path / "sweep.log").read_text()[-3000:]
        time.sleep(0.2)
    assert (runs / "seed0/eval.json").is_file(), "the first trial never finished"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the trials it runs
    proc.wait()
    kill_processes_with(marker)  # its local Ray (raylet, GCS, workers), not any other Ray
    first = (runs / "seed0/eval.json").read_bytes()
    stamp = (runs / "seed0/eval.json").stat().st_mtime_ns
    assert not (runs / "seed2/eval.json").exists()  # killed mid-way

    again = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert again.returncode == 2 and "--resume continues it" in again.stderr  # never overwrites
    done = subprocess.run([*cmd, "--resume"], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    # the finished trial was not repeated; every trial has its evaluation and checkpoints
    assert (runs / "seed0/eval.json").read_bytes() == first
    assert (runs / "seed0/eval.json").stat().st_mtime_ns == stamp
    for seed in (0, 1, 2):
        assert (runs / f"seed{seed}/checkpoints/last.ckpt").is_file()
        assert json.loads((runs / f"seed{seed}/eval.json").read_text())["episodes"] == 2
    table = (tmp_path / "out/tiny/results.md").read_text()
    assert "| default | 3 |" in table and "| 0 |" in table  # 3 seeds, none failed
    trials = json.loads((tmp_path / "out/tiny/results.json").read_text())
    assert sorted(t["seed"] for t in trials) == [0, 1, 2]
    assert all(t["error"] is None and "test/success_rate" in t["metrics"] for t in trials)
    assert (tmp_path / "out/tiny/learning_curves.png").stat().st_size > 0


def test_results_count_failed_and_unfinished_trials_apart(tmp_path: Path) -> None:
    """An interrupted sweep's table: finished seeds averaged, an errored trial under
    "failed", trials stopped mid-way or never started under "unfinished", not "failed"."""
    from pourlit.sweep import load_sweep, unfinished, write_results

    spec = load_sweep(write_sweep(tmp_path / "tiny.yaml"))
    spec.folder.mkdir(parents=True)
    done = {"test/success_rate": 0.5, "test/mean_poured_fraction": 0.6, "test/mean_return": 1.0}
    trials = [
        {"trial": "seed0", "setting": "default", "seed": 0, "metrics": done, "error": None},
        {"trial": "seed1", "setting": "default", "seed": 1,
         "metrics": {**done, "test/success_rate": 0.7}, "error": None},
        {"trial": "seed2", "setting": "default", "seed": 2, "metrics": {}, "error": "boom"},
        {"trial": "seed3", "setting": "default", "seed": 3, "metrics": {}, "error": None},
        {"trial": "(not started)", "setting": "(not started)", "seed": None, "metrics": {},
         "error": None},
    ]  # fmt: skip
    assert [t["trial"] for t in unfinished(trials)] == ["seed3", "(not started)"]
    table = write_results(spec, trials).read_text()
    assert "| default | 2 | 0.60 +- 0.14 | 0.60 +- 0.00 | 1.00 +- 0.00 | - | 1 | 1 |" in table
    assert "| (not started) | 0 | - | - | - | - | 0 | 1 |" in table
    assert "2 trials unfinished: `--resume` continues them." in table
    assert "- seed2: boom" in table


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"bogus": 1}, "unknown key(s) bogus"),
        ({"space": {}}, "'space' is empty"),
        ({"space": {"seed": {"grid": []}}}, "space.seed.grid: expected a non-empty list"),
        ({"space": {"seed": {"between": [0, 1]}}}, "space.seed: expected one of"),
        ({"fixed": {**TINY, "model.init_args.bogus": 1}}, "Option 'bogus' is not accepted"),
        ({"base": "configs/rl/nope.yaml"}, "base: configs/rl/nope.yaml does not exist"),
        ({"search": "bayes"}, "search must be one of grid, random, optuna"),
    ],
)
def test_bad_sweep_config_fails_before_any_trial(tmp_path: Path, override, expected) -> None:
    cfg = write_sweep(tmp_path / "bad.yaml", **override)
    rc, err = run_cli(["sweep", "-c", str(cfg)])
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ln.startswith("pourlit: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert str(cfg) in lines[0] and expected in lines[0], lines[0]
    assert not (tmp_path / "out").exists()  # no trial started, no sweep folder


def test_missing_ray_names_the_install_command(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    rc, err = run_cli(["sweep", "-c", str(write_sweep(tmp_path / "s.yaml"))])
    assert rc == 2
    assert "pip install 'pourlit[sweep]'" in err.strip().splitlines()[-1]


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs/sweeps").glob("*.yaml")))
def test_shipped_sweep_configs_are_valid(name: str) -> None:
    """Every flag of every setting exists in its base config (checked as before a sweep)."""
    from pourlit.sweep import check_flags, load_sweep

    spec = load_sweep(ROOT / "configs/sweeps" / name)
    check_flags(spec)
    assert spec.name == Path(name).stem
