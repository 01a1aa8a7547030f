"""End-to-end tests of the ``pourlit`` command line: collect, inspect, render, scene."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import tempfile
import types
from pathlib import Path

import h5py
import imageio.v2 as imageio
import mujoco
import numpy as np
import pytest
import torch

import pourlit
import pourlit.data.rollout as rollout_mod
from pourlit.cli import main
from pourlit.data import read_episode
from pourlit.replay import env_for_episode, replay
from pourlit.sim import task
from pourlit.sim.env import EnvConfig, PouringVecEnv

SUMMARY_KEYS = {
    "episodes_attempted",
    "episodes_written",
    "success_rate",
    "mean_poured_fraction",
    "mean_spilled_fraction",
    "env_steps",
    "wall_seconds",
}
SHORT_STEPS = 15


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def rollouts(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("rollout_*.h5"))


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def one_error_line(err: str) -> str:
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pourlit: error:"), err
    return lines[0]


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> tuple[Path, str]:
    """Two successful expert episodes (full length), collected once for the session."""
    out = tmp_path_factory.mktemp("collect") / "ds"
    rc, stdout, err = run_cli(
        ["collect", "--episodes", "2", "--num-envs", "2", "--out", str(out), "-q"]
    )
    assert rc == 0, err
    return out, stdout


@pytest.fixture(scope="session")
def short_config(tmp_path_factory) -> Path:
    """A collect config whose episodes end after a few steps (failures, kept)."""
    path = tmp_path_factory.mktemp("cfg") / "short.yaml"
    path.write_text(f"keep_failures: true\nenv:\n  max_episode_steps: {SHORT_STEPS}\n")
    return path


def collect_short(short_config: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli(["collect", "-c", str(short_config), "--out", str(out), "-q", *extra])


@pytest.fixture(scope="session")
def short_episode(short_config, tmp_path_factory) -> Path:
    """One rollout file of SHORT_STEPS steps (cheap to render)."""
    out = tmp_path_factory.mktemp("short") / "ds"
    rc, _, err = collect_short(short_config, out, "--episodes", "1", "--num-envs", "1")
    assert rc == 0, err
    return out / "rollout_00000.h5"


# -- collect -----------------------------------------------------------------------------------
def test_collect_writes_files_and_summary(dataset) -> None:
    out, stdout = dataset
    assert sorted(p.name for p in out.iterdir()) == [
        "rollout_00000.h5",
        "rollout_00001.h5",
        "summary.json",
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["episodes_attempted"] == 2
    assert summary["episodes_written"] == 2
    assert summary["success_rate"] == 1.0
    assert summary["mean_poured_fraction"] >= 0.8
    assert 0.0 <= summary["mean_spilled_fraction"] <= 0.2
    lengths = [read_episode(p).length for p in sorted(out.glob("rollout_*.h5"))]
    assert summary["env_steps"] == sum(lengths)
    assert summary["wall_seconds"] > 0
    line = json.loads(stdout.strip())  # the command prints one JSON line
    assert SUMMARY_KEYS <= line.keys()
    assert line["episodes_written"] == 2


def test_rollout_file_layout(dataset) -> None:
    out, _ = dataset
    seeds = []
    for path in sorted(out.glob("rollout_*.h5")):
        with h5py.File(path, "r") as f:
            assert f["traj_per_file"].shape == ()
            assert int(f["traj_per_file"][()]) == 1
            g = f["traj0"]
            states, actions = g["states"], g["actions"]
            t = states.shape[0]
            assert t > 100
            assert states.shape == (t, task.OBS_DIM) == (t, 50)
            assert states.dtype == np.float32
            assert actions.shape == (t, 7) and actions.dtype == np.float32
            for name, dtype in (("pad_mask", np.float32), ("rewards", np.float32)):
                assert g[name].shape == (t,) and g[name].dtype == dtype, name
            assert g["terminals"].shape == (t,) and g["terminals"].dtype == np.uint8
            np.testing.assert_array_equal(g["pad_mask"][()], np.ones(t))
            term = g["terminals"][()]
            assert term[-1] == 1 and term[:-1].sum() == 0  # success terminates the episode
            assert bool(g["success"][()]) is True
            a = actions[()]
            assert np.abs(a).max() <= 1.0
            assert a.min() < -0.5 and a.max() > 0.5  # the expert really acted
            assert np.isfinite(states[()]).all()
            attrs = dict(f.attrs)
        env_cfg = EnvConfig.from_dict(json.loads(attrs["env_config"]))
        assert env_cfg.num_envs == 2
        assert json.loads(attrs["obs_names"]) == list(task.OBS_NAMES)
        assert json.loads(attrs["action_names"]) == list(task.ACTION_NAMES)
        assert isinstance(attrs["seed"], int | np.integer)
        assert attrs["pourlit_version"] == pourlit.__version__
        assert attrs["poured_fraction"] >= 0.8
        seeds.append(int(attrs["seed"]))
    assert len(set(seeds)) == 2


def test_files_carry_the_experts_intended_actions(short_config, tmp_path) -> None:
    """``traj0/expert_actions`` are the expert's actions before exploration noise: equal to
    the executed ones without noise; with noise 0.3 they differ by the noise (std ~0.3 where
    unclipped) while the states are those the noisy actions led to."""
    rc, _, err = collect_short(
        short_config, tmp_path / "clean", "--episodes", "1", "--action-noise", "0"
    )
    assert rc == 0, err
    ep = read_episode(tmp_path / "clean" / "rollout_00000.h5")
    np.testing.assert_array_equal(ep.expert_actions, ep.actions)
    rc, _, err = collect_short(
        short_config, tmp_path / "noisy", "--episodes", "1", "--action-noise", "0.3"
    )
    assert rc == 0, err
    ep = read_episode(tmp_path / "noisy" / "rollout_00000.h5")
    diff = (ep.actions - ep.expert_actions)[np.abs(ep.actions) < 1]  # unclipped entries
    assert diff.size > 40 and 0.2 < float(diff.std()) < 0.4
    assert np.all(np.abs(ep.expert_actions) <= 1)


def test_recorded_episode_replays_exactly(dataset) -> None:
    """States are reproduced by resetting to the stored seed and stepping the stored actions."""
    out, _ = dataset
    ep = read_episode(out / "rollout_00000.h5")
    env = env_for_episode(ep)
    try:
        assert env.num_envs == 1 and not env.autoreset
        obs = env.reset_to([ep.attrs["seed"]])
        np.testing.assert_array_equal(obs[0].numpy(), ep.states[0])
        for t in range(1, ep.length):
            obs, *_ = env.step(torch.as_tensor(ep.actions[t - 1][None], dtype=torch.float64))
            np.testing.assert_allclose(obs[0].numpy(), ep.states[t], atol=1e-5, err_msg=str(t))
        steps = list(replay(ep, env))
        assert len(steps) == ep.length + 1
        info = steps[-1][1]
        assert float(info["poured_fraction"][0]) == pytest.approx(ep.attrs["poured_fraction"])
        assert bool(info["success"][0])
    finally:
        env.close()


def test_rerun_continues_numbering(dataset, short_config, tmp_path) -> None:
    out = tmp_path / "ds"
    shutil.copytree(dataset[0], out)
    before = {name: (out / name).read_bytes() for name in rollouts(out)}
    rc, _, err = collect_short(short_config, out, "--episodes", "2", "--num-envs", "2")
    assert rc == 0, err
    assert rollouts(out) == [f"rollout_{i:05d}.h5" for i in range(4)]
    for name, data in before.items():
        assert (out / name).read_bytes() == data, name
    for i in (2, 3):
        ep = read_episode(out / f"rollout_{i:05d}.h5")
        assert ep.length == SHORT_STEPS
        assert ep.truncated[-1] and not ep.success
    assert hidden(out) == []


def test_rank_flags_write_only_their_indices(short_config, tmp_path) -> None:
    out = tmp_path / "ranked"
    args = ["--episodes", "2", "--num-envs", "1", "--rank", "1", "--world-size", "2"]
    rc, _, err = collect_short(short_config, out, *args)
    assert rc == 0, err
    assert rollouts(out) == ["rollout_00001.h5", "rollout_00003.h5"]
    summary = json.loads((out / "summary.json").read_text())
    assert [(r["rank"], r["world_size"]) for r in summary["runs"]] == [(1, 2)]
    ep = read_episode(out / "rollout_00003.h5")
    assert (ep.attrs["rank"], ep.attrs["world_size"]) == (1, 2)


def test_rank_from_environment(short_config, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    out = tmp_path / "env_ranked"
    rc, _, err = collect_short(short_config, out, "--episodes", "1", "--num-envs", "1")
    assert rc == 0, err
    assert rollouts(out) == ["rollout_00002.h5"]
    summary = json.loads((out / "summary.json").read_text())
    assert [(r["rank"], r["world_size"]) for r in summary["runs"]] == [(2, 3)]
    # flags win over the environment
    rc, _, err = collect_short(short_config, out, "--episodes", "1", "--rank", "0")
    assert rc == 0, err
    assert rollouts(out) == ["rollout_00002.h5", "rollout_00003.h5"]  # 3 % 3 == 0


def test_seed_makes_collection_reproducible(short_config, tmp_path) -> None:
    for name in ("a", "b"):
        rc, _, err = collect_short(short_config, tmp_path / name, "--episodes", "1", "--seed", "7")
        assert rc == 0, err
    a = read_episode(tmp_path / "a" / "rollout_00000.h5")
    b = read_episode(tmp_path / "b" / "rollout_00000.h5")
    np.testing.assert_array_equal(a.states, b.states)
    np.testing.assert_array_equal(a.actions, b.actions)
    assert a.attrs["seed"] == b.attrs["seed"]


def test_continuing_a_folder_adds_new_episodes_not_copies(short_config, tmp_path) -> None:
    out = tmp_path / "grow"
    for _ in range(2):
        rc, _, err = collect_short(short_config, out, "--episodes", "1", "--seed", "7")
        assert rc == 0, err
    assert rollouts(out) == ["rollout_00000.h5", "rollout_00001.h5"]
    a, b = (read_episode(out / f"rollout_0000{i}.h5") for i in (0, 1))
    assert a.attrs["seed"] != b.attrs["seed"]


# -- collect: bad input ------------------------------------------------------------------------
def test_unknown_config_key(tmp_path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("episodes: 1\nepisodez: 3\n")
    out = tmp_path / "out"
    rc, stdout, err = run_cli(["collect", "-c", str(cfg), "--out", str(out), "-q"])
    assert rc == 2
    line = one_error_line(err)
    assert str(cfg) in line and "episodez" in line
    assert stdout == ""
    assert not out.exists()


def test_unknown_nested_env_key(tmp_path) -> None:
    cfg = tmp_path / "bad_env.yaml"
    cfg.write_text("env:\n  liquid:\n    count: 4\n    colour: red\n")
    rc, _, err = run_cli(["collect", "-c", str(cfg), "--out", str(tmp_path / "o"), "-q"])
    assert rc == 2
    line = one_error_line(err)
    assert "colour" in line and "liquid" in line


def test_unknown_env_key_names_the_file_and_creates_no_output_folder(tmp_path) -> None:
    cfg = tmp_path / "bad_env.yaml"
    cfg.write_text("env:\n  bogus: 1\n")
    out = tmp_path / "never"
    rc, _, err = run_cli(["collect", "-c", str(cfg), "--out", str(out), "-q"])
    assert rc == 2
    line = one_error_line(err)
    assert "bogus" in line
    assert str(cfg) in line
    assert not out.exists()


def test_zero_episodes(tmp_path) -> None:
    rc, _, err = run_cli(["collect", "--episodes", "0", "--out", str(tmp_path / "o"), "-q"])
    assert rc == 2
    assert "episodes" in one_error_line(err)


def test_missing_config_file(tmp_path) -> None:
    missing = tmp_path / "nope.yaml"
    rc, _, err = run_cli(["collect", "-c", str(missing), "--out", str(tmp_path / "o"), "-q"])
    assert rc == 2
    assert str(missing) in one_error_line(err)


def test_out_is_an_existing_file(tmp_path) -> None:
    target = tmp_path / "a_file"
    target.write_text("x")
    rc, _, err = run_cli(["collect", "--episodes", "1", "--out", str(target), "-q"])
    assert rc == 2
    assert str(target) in one_error_line(err)
    assert target.read_text() == "x"


def test_unwritable_output_folder(tmp_path, monkeypatch) -> None:
    out = tmp_path / "locked"
    out.mkdir()
    if os.geteuid() == 0:  # root ignores permission bits: simulate the failure

        def deny(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", str(out))

        monkeypatch.setattr(tempfile, "NamedTemporaryFile", deny)
    else:
        out.chmod(0o500)
    try:
        rc, _, err = run_cli(["collect", "--episodes", "1", "--out", str(out), "-q"])
    finally:
        out.chmod(0o700)
    assert rc != 0
    line = one_error_line(err)
    assert str(out) in line and "Permission denied" in line
    assert list(out.iterdir()) == []


def test_disk_full_on_second_file(short_config, tmp_path, monkeypatch) -> None:
    real_file = h5py.File
    opened = {"n": 0}

    class FlakyFile(real_file):
        """An h5py.File whose 2nd opening for writing fails on its first dataset."""

        def __init__(self, name, mode="r", *args, **kwargs):
            super().__init__(name, mode, *args, **kwargs)
            if mode == "w":
                opened["n"] += 1
            self._full = mode == "w" and opened["n"] == 2

        def create_dataset(self, *args, **kwargs):
            if self._full:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().create_dataset(*args, **kwargs)

    fake_h5py = types.SimpleNamespace(File=FlakyFile, Group=h5py.Group, Dataset=h5py.Dataset)
    monkeypatch.setattr(rollout_mod, "h5py", fake_h5py)
    out = tmp_path / "full"
    rc, _, err = collect_short(short_config, out, "--episodes", "3", "--num-envs", "1")
    monkeypatch.undo()
    assert opened["n"] == 2  # the failing write really started a (temporary) file
    assert rc == 1
    assert one_error_line(err) == (
        f"pourlit: error: {out / 'rollout_00001.h5'}: no space left on device"
    )
    assert rollouts(out) == ["rollout_00000.h5"]
    ep = read_episode(out / "rollout_00000.h5")
    assert ep.length == SHORT_STEPS and ep.states.shape == (SHORT_STEPS, 50)
    assert hidden(out) == []
    summary = json.loads((out / "summary.json").read_text())  # covers the file written
    assert list(summary["rollouts"]) == ["rollout_00000.h5"]
    assert [(r["status"], r["written"]) for r in summary["runs"]] == [("failed", 1)]


# -- inspect -----------------------------------------------------------------------------------
def test_inspect_lists_malformed_files(dataset, tmp_path) -> None:
    folder = tmp_path / "ds"
    shutil.copytree(dataset[0], folder)
    garbage = folder / "rollout_00099.h5"
    garbage.write_bytes(b"this is not an HDF5 file\n" * 10)
    rc, stdout, err = run_cli(["inspect", str(folder)])
    assert rc == 0, err
    rows = {}
    for line in stdout.splitlines():
        parts = line.strip().rsplit(None, 1)
        if len(parts) == 2:
            rows[parts[0].strip()] = parts[1]
    assert rows["files"] == "3"
    assert rows["episodes"] == "2"
    assert rows["state dim"] == "50"
    assert rows["action dim"] == "7"
    assert "Malformed files (1)" in stdout
    assert str(garbage) in stdout
    rc, _, _ = run_cli(["inspect", "--strict", str(folder)])
    assert rc == 1


def test_inspect_missing_path(tmp_path) -> None:
    rc, _, err = run_cli(["inspect", str(tmp_path / "missing")])
    assert rc == 2
    assert str(tmp_path / "missing") in one_error_line(err)


# -- render ------------------------------------------------------------------------------------
def test_render_short_episode_to_gif(short_episode, tmp_path) -> None:
    gif = tmp_path / "video" / "out.gif"
    rc, stdout, err = run_cli(["render", str(short_episode), "-o", str(gif)])
    assert rc == 0, err
    info = json.loads(stdout.strip())
    assert info["source"] == "replay"
    assert info["frames"] == SHORT_STEPS + 1  # the reset frame plus one per action
    assert info["poured_fraction"] == info["recorded_poured_fraction"]
    assert gif.stat().st_size > 1000
    frames = imageio.mimread(gif)
    assert len(frames) == SHORT_STEPS + 1
    assert frames[0].shape[:2] == (240, 320)
    assert not np.array_equal(frames[0], frames[-1])  # the arm moved


def test_render_rejects_unknown_video_suffix(short_episode, tmp_path) -> None:
    rc, _, err = run_cli(["render", str(short_episode), "-o", str(tmp_path / "x.avi")])
    assert rc == 2
    assert ".mp4" in one_error_line(err)
    assert not (tmp_path / "x.avi").exists()


def test_render_images_source_without_images(short_episode, tmp_path) -> None:
    rc, _, err = run_cli(
        ["render", str(short_episode), "-o", str(tmp_path / "x.gif"), "--source", "images"]
    )
    assert rc == 2
    line = one_error_line(err)
    assert str(short_episode) in line and "replay" in line


# -- scene -------------------------------------------------------------------------------------
def test_scene_writes_compilable_mjcf(tmp_path) -> None:
    path = tmp_path / "x.xml"
    rc, stdout, err = run_cli(["scene", "-o", str(path), "--liquid-count", "40"])
    assert rc == 0, err
    assert str(path) in stdout
    model = mujoco.MjModel.from_xml_path(str(path))
    spheres = [g for g in range(model.ngeom) if model.geom_type[g] == mujoco.mjtGeom.mjGEOM_SPHERE]
    assert len(spheres) == 40
    env_model = PouringVecEnv(EnvConfig()).model  # 32 spheres by default
    assert model.nq == env_model.nq + 3 * 8
    assert model.nbody == env_model.nbody + 8


def test_num_envs_given_twice_is_an_error_not_a_silent_override(tmp_path: Path) -> None:
    cfg = tmp_path / "twice.yaml"
    cfg.write_text("num_envs: 2\nenv:\n  num_envs: 4\n")
    out = tmp_path / "ds"
    rc, _, err = run_cli(["collect", "-c", str(cfg), "--episodes", "1", "--out", str(out), "-q"])
    assert rc == 2 and "num_envs given twice (2 and env.num_envs 4)" in one_error_line(err)
    assert not out.exists() or rollouts(out) == []
