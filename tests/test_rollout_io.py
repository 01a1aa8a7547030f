"""Tests for pourlit.data.rollout: file layout, atomic writes, validation, numbering, summary."""

from __future__ import annotations

import errno
from pathlib import Path

import h5py
import numpy as np
import pytest

from pourlit.data import (
    Episode,
    RolloutFormatError,
    RolloutWriteError,
    format_summary,
    list_rollouts,
    next_free_index,
    read_episode,
    rollout_path,
    summarize,
    write_episode,
)

T, DS, DA = 12, 5, 3


def make_episode(t: int = T, success: bool = True, seed: int = 0) -> Episode:
    rng = np.random.default_rng(seed)
    terminals = np.zeros(t, bool)
    terminals[-1] = success
    truncated = np.zeros(t, bool)
    truncated[-1] = not success
    return Episode(
        states=rng.normal(size=(t, DS)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(t, DA)).astype(np.float32),
        rewards=rng.normal(size=t).astype(np.float32),
        terminals=terminals,
        truncated=truncated,
        pad_mask=np.ones(t, np.float32),
        success=success,
        attrs={
            "seed": 42 + seed,
            "env_config": {"dt": 0.002, "liquid": "water"},
            "obs_names": [f"o{i}" for i in range(DS)],
            "action_names": [f"a{i}" for i in range(DA)],
            "episode_index": 3,
            "rank": 1,
            "poured_fraction": 0.75,
            "spilled_fraction": 0.0,
            "expert_params": {"tilt": 1.2, "gains": [1, 2]},
        },
    )


def assert_same_arrays(a: Episode, b: Episode) -> None:
    for name in ("states", "actions", "rewards", "terminals", "truncated", "pad_mask"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_round_trip(tmp_path: Path) -> None:
    ep = make_episode()
    path = write_episode(tmp_path / "rollout_00000.h5", ep)
    back = read_episode(path)
    assert_same_arrays(ep, back)
    assert back.success is True
    assert back.length == T
    assert back.path == path
    assert back.images is None
    assert back.attrs.pop("pourlit_version")
    assert back.attrs == ep.attrs


def test_images_round_trip(tmp_path: Path) -> None:
    ep = make_episode()
    images = np.random.default_rng(1).integers(0, 256, size=(T, 8, 6, 3), dtype=np.uint8)
    path = write_episode(tmp_path / "rollout_00000.h5", ep, images=images)
    np.testing.assert_array_equal(read_episode(path, load_images=True).images, images)
    assert read_episode(path).images is None
    with h5py.File(path, "r") as f:
        ds = f["traj0/images"]
        assert ds.compression == "gzip" and ds.chunks == (1, 8, 6, 3)


def test_expert_actions_round_trip_and_validation(tmp_path: Path) -> None:
    ep = make_episode()
    labels = np.clip(ep.actions + 0.25, -1, 1)
    path = write_episode(tmp_path / "rollout_00000.h5", ep, expert_actions=labels)
    back = read_episode(path)
    np.testing.assert_array_equal(back.expert_actions, labels)
    np.testing.assert_array_equal(back.actions, ep.actions)  # executed actions unchanged
    assert read_episode(write_episode(tmp_path / "rollout_00001.h5", ep)).expert_actions is None
    with pytest.raises(ValueError, match=r"expert_actions must have the shape of actions"):
        write_episode(tmp_path / "rollout_00002.h5", ep, expert_actions=labels[:-1])
    with h5py.File(tmp_path / "rollout_00003.h5", "w") as f:  # a foreign file, wrong shape
        f["traj0/states"], f["traj0/actions"] = ep.states, ep.actions
        f["traj0/pad_mask"], f["traj0/expert_actions"] = ep.pad_mask, ep.actions[:, :2]
    with pytest.raises(RolloutFormatError, match=r"rollout_00003.h5: traj0/expert_actions has"):
        read_episode(tmp_path / "rollout_00003.h5")


def test_arrays_api_defaults(tmp_path: Path) -> None:
    s = np.zeros((4, 2))
    a = np.ones((4, 1))
    back = read_episode(write_episode(tmp_path / "rollout_00001.h5", states=s, actions=a))
    assert back.states.dtype == np.float32 and back.states.shape == (4, 2)
    np.testing.assert_array_equal(back.pad_mask, np.ones(4))
    assert not back.terminals.any() and not back.truncated.any() and back.success is False


def test_plain_h5py_layout(tmp_path: Path) -> None:
    path = write_episode(tmp_path / "rollout_00000.h5", make_episode())
    with h5py.File(path, "r") as f:
        assert f["traj_per_file"][()] == 1
        assert set(f.keys()) == {"traj_per_file", "traj0"}
        g = f["traj0"]
        expected = {
            "states": ((T, DS), np.float32),
            "actions": ((T, DA), np.float32),
            "pad_mask": ((T,), np.float32),
            "rewards": ((T,), np.float32),
            "terminals": ((T,), np.uint8),
            "truncated": ((T,), np.uint8),
        }
        assert set(g.keys()) == set(expected) | {"success"}
        for name, (shape, dtype) in expected.items():
            assert g[name].shape == shape and g[name].dtype == dtype, name
        assert g["success"].shape == () and g["success"].dtype == np.bool_
        assert g["terminals"][-1] == 1 and g["truncated"][-1] == 0
        assert isinstance(f.attrs["pourlit_version"], str)
        assert f.attrs["seed"] == 42
        assert f.attrs["env_config"] == '{"dt": 0.002, "liquid": "water"}'
        assert f.attrs["obs_names"] == '["o0", "o1", "o2", "o3", "o4"]'


def test_write_validation(tmp_path: Path) -> None:
    good = dict(states=np.zeros((4, 2)), actions=np.zeros((4, 1)))
    bad_cases = [
        (dict(good, states=np.zeros(4)), "2-D"),
        (dict(good, actions=np.zeros((3, 1))), "actions has 3 steps"),
        (dict(good, rewards=np.zeros(5)), "rewards has 5 steps"),
        (dict(good, states=np.full((4, 2), np.nan)), "non-finite"),
        (dict(good, images=np.zeros((4, 2, 2, 3), np.float32)), "uint8"),
    ]
    for kwargs, msg in bad_cases:
        with pytest.raises(ValueError, match=msg):
            write_episode(tmp_path / "rollout_00000.h5", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    original = h5py.Group.create_dataset

    def failing(self, *args, **kwargs):  # fail on the third dataset: midway through the file
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    path = tmp_path / "rollout_00000.h5"
    with pytest.raises(RolloutWriteError) as info:
        write_episode(path, make_episode())
    assert str(info.value) == f"{path}: no space left on device"
    assert isinstance(info.value.__cause__, OSError)
    assert calls["n"] == 3
    assert list(tmp_path.iterdir()) == []


def test_never_overwrites(tmp_path: Path) -> None:
    path = write_episode(tmp_path / "rollout_00000.h5", make_episode(seed=0))
    with pytest.raises(FileExistsError, match="already exists"):
        write_episode(path, make_episode(seed=1))
    assert read_episode(path).attrs["seed"] == 42
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rollout_00000.h5"]


def test_numbering_continues_and_is_disjoint(tmp_path: Path) -> None:
    assert next_free_index(tmp_path / "missing") == 0
    assert next_free_index(tmp_path / "missing", rank=1, world_size=2) == 1
    for i in (0, 1, 4):
        write_episode(rollout_path(tmp_path, i), make_episode(t=2))
    assert next_free_index(tmp_path) == 5
    assert next_free_index(tmp_path, rank=0, world_size=2) == 6
    assert next_free_index(tmp_path, rank=1, world_size=2) == 5
    write_episode(rollout_path(tmp_path, 5), make_episode(t=2))  # rank 1 took 5: it moves on
    assert next_free_index(tmp_path, rank=1, world_size=2) == 7
    with pytest.raises(ValueError):
        next_free_index(tmp_path, rank=2, world_size=2)


def test_list_rollouts_nested_ignores_temp(tmp_path: Path) -> None:
    for sub, i in (("batch0", 0), ("batch0", 1), ("batch1", 2)):
        write_episode(rollout_path(tmp_path / sub, i), make_episode(t=2))
    (tmp_path / "batch1" / ".rollout_00003.h5.tmp-123").write_bytes(b"partial")
    (tmp_path / "batch1" / "notes.txt").write_text("x")
    found = list_rollouts(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "batch0/rollout_00000.h5",
        "batch0/rollout_00001.h5",
        "batch1/rollout_00002.h5",
    ]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_rollouts(tmp_path / "nope")


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    """Write one malformed file per failure mode; returns {case: path}."""
    files: dict[str, Path] = {}

    trunc = write_episode(tmp_path / "trunc.h5", make_episode(t=200))
    data = trunc.read_bytes()
    trunc.write_bytes(data[: len(data) // 2])
    files["truncated"] = trunc

    files["garbage"] = tmp_path / "garbage.h5"
    files["garbage"].write_bytes(b"this is not an hdf5 file" * 10)

    def raw(name: str, **datasets: np.ndarray) -> None:
        files[name] = tmp_path / f"{name}.h5"
        with h5py.File(files[name], "w") as f:
            f["traj_per_file"] = 1
            for key, value in datasets.items():
                f[f"traj0/{key}"] = value

    ok_s, ok_a, ok_m = np.zeros((5, 2), np.float32), np.zeros((5, 1), np.float32), np.ones(5)
    raw("no_actions", states=ok_s, pad_mask=ok_m)
    nan_s = ok_s.copy()
    nan_s[2, 1] = np.nan
    raw("nan_states", states=nan_s, actions=ok_a, pad_mask=ok_m)
    raw("inconsistent_t", states=ok_s, actions=np.zeros((4, 1), np.float32), pad_mask=ok_m)
    raw("wrong_ndim", states=np.zeros(5, np.float32), actions=ok_a, pad_mask=ok_m)
    files["no_traj0"] = tmp_path / "no_traj0.h5"
    with h5py.File(files["no_traj0"], "w") as f:
        f["traj_per_file"] = 1
    return files


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("truncated", "cannot read"),
        ("garbage", "cannot read"),
        ("no_actions", "traj0/actions"),
        ("nan_states", "NaN"),
        ("inconsistent_t", "inconsistent length"),
        ("wrong_ndim", "2-D"),
        ("no_traj0", "traj0"),
    ],
)
def test_read_errors(tmp_path: Path, case: str, needle: str) -> None:
    path = _bad_files(tmp_path)[case]
    with pytest.raises(RolloutFormatError) as info:
        read_episode(path)
    assert str(info.value).startswith(f"{path}: ")
    assert needle in str(info.value)


def test_missing_file_is_format_error(tmp_path: Path) -> None:
    path = tmp_path / "rollout_00009.h5"
    with pytest.raises(RolloutFormatError) as info:
        read_episode(path)
    assert str(info.value) == f"{path}: file does not exist"


def test_seed_layout(tmp_path: Path) -> None:
    path = tmp_path / "rollout_00000.h5"
    states = np.arange(12, dtype=np.float32).reshape(6, 2)
    actions = np.ones((6, 3), np.float32)
    with h5py.File(path, "w") as f:
        f["traj_per_file"] = 1
        f["traj0/states"] = states
        f["traj0/actions"] = actions
        f["traj0/pad_mask"] = np.ones(6, np.float32)
    ep = read_episode(path)
    np.testing.assert_array_equal(ep.states, states)
    np.testing.assert_array_equal(ep.actions, actions)
    np.testing.assert_array_equal(ep.rewards, np.zeros(6))
    assert not ep.terminals.any() and not ep.truncated.any()
    assert ep.success is False and ep.attrs == {}


def test_seed_state_only_image_mode(tmp_path: Path) -> None:
    path = tmp_path / "rollout_00000.h5"
    state_vec = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f["traj_per_file"] = 1
        f["traj0/states"] = np.zeros((6, 4), np.float32)
        f["traj0/images"] = state_vec
        f["traj0/actions"] = np.ones((6, 3), np.float32)
        f["traj0/pad_mask"] = np.ones(6, np.float32)
    ep = read_episode(path, load_images=True)
    np.testing.assert_array_equal(ep.states, state_vec)
    assert ep.images is None


def test_summarize_and_format(tmp_path: Path) -> None:
    write_episode(rollout_path(tmp_path / "batch0", 0), make_episode(t=10, success=True))
    write_episode(rollout_path(tmp_path / "batch0", 1), make_episode(t=20, success=False, seed=1))
    write_episode(rollout_path(tmp_path / "batch1", 2), make_episode(t=30, success=True, seed=2))
    bad = tmp_path / "batch1" / "rollout_00003.h5"
    bad.write_bytes(b"garbage")

    s = summarize(tmp_path)
    assert (s.files, s.episodes, s.steps) == (4, 3, 60)
    assert (s.state_dim, s.action_dim) == (DS, DA)
    assert s.success_rate == pytest.approx(2 / 3)
    all_actions = np.concatenate(
        [make_episode(t=t, seed=k).actions for t, k in ((10, 0), (20, 1), (30, 2))]
    )
    np.testing.assert_array_equal(s.action_min, all_actions.min(axis=0))
    np.testing.assert_array_equal(s.action_max, all_actions.max(axis=0))
    assert len(s.bad_files) == 1 and s.bad_files[0][0] == bad
    assert s.bad_files[0][1].startswith(str(bad))

    text = format_summary(s)
    assert "episodes      3" in text and "steps         60" in text
    assert "mean length   20.0" in text and "66.7% (2/3)" in text
    assert "Action ranges" in text and "a2" in text
    assert "Malformed files (1)" in text and str(bad) in text

    assert summarize([bad]).episodes == 0
    assert "Malformed files (1)" in format_summary(summarize([bad]))
