"""Tests for pourlit.data (datamodule, windows, loader): windows, split, determinism, sharding, formats, bad data."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import lightning as L
import numpy as np
import pytest
import torch

from pourlit.data import (
    RolloutDataModule,
    RolloutFormatError,
    SkippedRolloutWarning,
    write_episode,
)
from pourlit.data.loader import ResumableDataLoader
from pourlit.data.windows import WindowDataset, WindowSampler

H = 10
DS, DA = 4, 3
LENGTHS = (5, 12, 19, 26, 33, 40)


def encoded_episode(ep: int, t: int, ds: int = DS) -> tuple[np.ndarray, np.ndarray]:
    """States s[t] = (ep, t, 100*ep + t, 1, ...) and actions a[t] = (ep, t, 0.5)."""
    steps = np.arange(t, dtype=np.float32)
    states = np.ones((t, ds), np.float32)
    states[:, 0], states[:, 1], states[:, 2] = ep, steps, 100 * ep + steps
    actions = np.stack([np.full(t, ep), steps, np.full(t, 0.5)], axis=1).astype(np.float32)
    return states, actions


def write_dataset(root: Path, lengths=LENGTHS, nested: bool = False) -> list[Path]:
    paths = []
    for ep, t in enumerate(lengths):
        folder = root / f"batch{ep % 2}" if nested else root
        s, a = encoded_episode(ep, t)
        paths.append(write_episode(folder / f"rollout_{ep:05d}.h5", states=s, actions=a))
    return paths


def make_dm(root: Path, **kw) -> RolloutDataModule:
    args = dict(horizon=H, batch_size=8, windows_per_epoch=32, val_windows=16, val_fraction=0.34)
    args.update(kw)
    dm = RolloutDataModule(str(root), **args)
    dm.setup("fit")
    return dm


def epoch_batches(dm: RolloutDataModule, epoch: int) -> list[dict[str, torch.Tensor]]:
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    return list(loader)


def assert_batches_equal(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for k in ("states", "actions", "pad_mask"):
            torch.testing.assert_close(x[k], y[k], rtol=0, atol=0)


def check_window(states: np.ndarray, actions: np.ndarray, pad: np.ndarray, length_of) -> None:
    """A window is consecutive steps of one episode; padded steps are exactly the past-end ones."""
    ep = int(states[0, 0])
    t0 = int(states[0, 1])
    t_len = length_of[ep]
    n = min(H + 1, t_len - t0)
    assert n >= 1
    np.testing.assert_array_equal(pad, (np.arange(H + 1) < n).astype(np.float32))
    np.testing.assert_array_equal(states[:n, 0], ep)
    np.testing.assert_array_equal(states[:n, 1], t0 + np.arange(n))
    np.testing.assert_array_equal(states[:n, 2], 100 * ep + t0 + np.arange(n))
    np.testing.assert_array_equal(states[n:], 0)
    m = min(H, n)
    np.testing.assert_array_equal(actions[:m, :2], states[:m, :2])  # a_t belongs with s_t
    np.testing.assert_array_equal(actions[m:], 0)
    if t_len >= H + 1:
        assert n == H + 1  # full-length episodes never produce padded windows


# ----------------------------------------------------------------------------- batches


def test_batch_shapes_dtypes_and_windows(tmp_path: Path) -> None:
    write_dataset(tmp_path)
    dm = make_dm(tmp_path, val_fraction=0.0)  # one val episode, five train
    assert (dm.state_dim, dm.action_dim) == (DS, DA)
    assert dm.num_train_episodes == 5 and dm.num_val_episodes == 1
    assert dm.mean_episode_length == pytest.approx(np.mean(LENGTHS))
    batches = epoch_batches(dm, 0)
    assert len(batches) == 32 // 8
    val = list(dm.val_dataloader())
    assert sum(len(b["states"]) for b in val) == 16
    length_of = dict(enumerate(LENGTHS))
    val_eps = {int(Path(p).stem.split("_")[1]) for p in dm.val_files}
    for loader_batches, allowed in ((batches, set(range(6)) - val_eps), (val, val_eps)):
        for b in loader_batches:
            assert b["states"].shape[1:] == (H + 1, DS) and b["states"].dtype == torch.float32
            assert b["actions"].shape[1:] == (H, DA) and b["actions"].dtype == torch.float32
            assert b["pad_mask"].shape[1:] == (H + 1,) and b["pad_mask"].dtype == torch.float32
            for s, a, p in zip(b["states"], b["actions"], b["pad_mask"], strict=True):
                assert int(s[0, 0]) in allowed
                check_window(s.numpy(), a.numpy(), p.numpy(), length_of)


def test_short_episodes_are_padded(tmp_path: Path) -> None:
    write_dataset(tmp_path, lengths=(3, 7, 11))
    dm = make_dm(tmp_path, val_fraction=0.0, split_seed=0, windows_per_epoch=64)
    seen = set()
    for b in epoch_batches(dm, 0):
        for s, a, p in zip(b["states"], b["actions"], b["pad_mask"], strict=True):
            ep = int(s[0, 0])
            seen.add(ep)
            t_len = (3, 7, 11)[ep]
            assert int(s[0, 1]) == 0  # one window per short (or exactly H+1) episode
            assert p.sum() == min(t_len, H + 1)
            check_window(s.numpy(), a.numpy(), p.numpy(), {0: 3, 1: 7, 2: 11})
    assert len(seen) == 2  # both train episodes sampled, equal weight 1 each


def test_file_padding_is_kept_and_zeroed(tmp_path: Path) -> None:
    s, a = encoded_episode(0, 15)
    mask = np.ones(15, np.float32)
    mask[12:] = 0  # seed-style padded tail
    write_episode(tmp_path / "rollout_00000.h5", states=s, actions=a, pad_mask=mask)
    with pytest.warns(UserWarning, match="only one valid episode"):
        dm = make_dm(tmp_path)
    for b in epoch_batches(dm, 0):
        for st, ac, p in zip(b["states"], b["actions"], b["pad_mask"], strict=True):
            t = int(st[0, 1]) + np.arange(H + 1)  # starts 0..4 are all real steps (t0 < 12)
            np.testing.assert_array_equal(p.numpy(), (t < 12).astype(np.float32))
            assert torch.all(st[p == 0] == 0) and torch.all(ac[p[:H] == 0] == 0)
            np.testing.assert_array_equal(st[p == 1, 1].numpy(), t[: int(p.sum())])


def test_nested_batch_folders(tmp_path: Path) -> None:
    paths = write_dataset(tmp_path, nested=True)
    assert {p.parent.name for p in paths} == {"batch0", "batch1"}
    dm = make_dm(tmp_path)
    assert sorted(dm.train_files + dm.val_files) == sorted(paths)


# ----------------------------------------------------------------------------- split


def test_split_deterministic_disjoint_and_seeded(tmp_path: Path) -> None:
    write_dataset(tmp_path)
    a = make_dm(tmp_path, split_seed=0)
    b = make_dm(tmp_path, split_seed=0)
    assert a.val_files == b.val_files and a.train_files == b.train_files
    assert len(a.val_files) == 2 and len(a.train_files) == 4  # round(0.34 * 6) = 2
    assert not set(a.train_files) & set(a.val_files)
    assert set(a.train_files) | set(a.val_files) == set(tmp_path.glob("rollout_*.h5"))
    others = {tuple(make_dm(tmp_path, split_seed=s).val_files) for s in range(1, 5)}
    assert any(v != tuple(a.val_files) for v in others)


# ----------------------------------------------------------------------------- determinism


def test_same_seed_epoch_same_batches_across_instances_and_workers(tmp_path: Path) -> None:
    write_dataset(tmp_path)
    a = make_dm(tmp_path, seed=3)
    b = make_dm(tmp_path, seed=3, num_workers=2)
    e0 = epoch_batches(a, 0)
    assert_batches_equal(e0, epoch_batches(b, 0))
    assert_batches_equal(epoch_batches(a, 5), epoch_batches(b, 5))
    e1 = epoch_batches(a, 1)
    assert not torch.equal(e0[0]["states"], e1[0]["states"])
    other_seed = epoch_batches(make_dm(tmp_path, seed=4), 0)
    assert not torch.equal(e0[0]["states"], other_seed[0]["states"])
    # Validation windows are fixed: independent of the epoch.
    v = a.val_dataloader()
    first = list(v)
    v.sampler.set_epoch(7)
    assert_batches_equal(first, list(v))
    assert_batches_equal(first, list(b.val_dataloader()))


def test_window_sampling_weights(tmp_path: Path) -> None:
    """Episodes are drawn in proportion to their window counts, starts uniformly."""
    episodes = [(*encoded_episode(ep, t), np.ones(t, np.float32)) for ep, t in ((0, 13), (1, 40))]
    ds = WindowDataset(episodes, H, 6000, seed=0)
    ep, start = ds.plan(0)
    assert ds.window_counts.tolist() == [3, 30]
    assert abs(np.mean(ep == 0) - 3 / 33) < 0.015
    assert set(start[ep == 0].tolist()) == {0, 1, 2}
    assert start[ep == 1].max() == 29 and start[ep == 1].min() == 0


def test_window_ids_address_every_window_once(tmp_path: Path) -> None:
    """Window ids 0 .. W-1 are every (episode, start) pair exactly once; ``windows(ids)`` gives
    the same windows as the loader (padding included) and a batch's ``window`` ids are those of
    its windows."""
    lengths = (3, 11, 13, 40)
    episodes = [(*encoded_episode(ep, t), np.ones(t, np.float32)) for ep, t in enumerate(lengths)]
    ds = WindowDataset(episodes, H, 50, seed=2)
    assert ds.total_windows == 1 + 1 + 3 + 30
    every = ds.windows(np.arange(ds.total_windows))
    assert every["states"].shape == (35, H + 1, DS) and every["window"].dtype == torch.int64
    pairs = {(int(s[0, 0]), int(s[0, 1])) for s in every["states"]}
    assert len(pairs) == 35 and (3, 29) in pairs and (0, 0) in pairs
    length_of = dict(enumerate(lengths))
    for s, a, p in zip(every["states"], every["actions"], every["pad_mask"], strict=True):
        check_window(s.numpy(), a.numpy(), p.numpy(), length_of)
    episode, start = ds.locate(np.arange(35))
    assert [(int(e), int(t)) for e, t in zip(episode, start, strict=True)] == sorted(pairs)
    for i in range(len(ds)):
        item = ds[i]
        ref = ds.windows(item["window"][None])
        for k in ("states", "actions", "pad_mask"):
            torch.testing.assert_close(item[k], ref[k][0], rtol=0, atol=0)


# ----------------------------------------------------------------------------- DDP sharding


def test_sampler_shards_are_disjoint_and_cover_the_epoch() -> None:
    n = 37
    for epoch in (0, 3):
        shares = []
        for rank in (0, 1):
            s = WindowSampler(n, rank=rank, world_size=2)
            s.set_epoch(epoch)
            shares.append(list(s))
            assert len(s) == len(shares[-1])
        assert not set(shares[0]) & set(shares[1])
        assert sorted(shares[0] + shares[1]) == list(range(epoch * n, (epoch + 1) * n))
    fixed = WindowSampler(n, rank=1, world_size=2, per_epoch=False)
    fixed.set_epoch(4)
    assert list(fixed) == list(range(1, n, 2))
    single = WindowSampler(n)  # no process group: rank 0 of 1
    assert (single.rank, single.num_replicas, len(single)) == (0, 1, n)


def test_ranks_together_see_the_single_process_epoch(tmp_path: Path) -> None:
    write_dataset(tmp_path)
    dm = make_dm(tmp_path, windows_per_epoch=32, batch_size=8)  # 32 = multiple of 2 * 8
    full = torch.cat([b["states"] for b in epoch_batches(dm, 2)])
    ds = dm.train_dataloader().dataset
    got = {}
    for rank in (0, 1):
        sampler = WindowSampler(len(ds), rank=rank, world_size=2)
        sampler.set_epoch(2)
        for g in sampler:
            got[g - 2 * len(ds)] = ds[g]["states"]
    assert sorted(got) == list(range(32))
    torch.testing.assert_close(torch.stack([got[i] for i in range(32)]), full, rtol=0, atol=0)


# ----------------------------------------------------------------------------- mid-epoch resume


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_state_round_trip_resumes_mid_epoch(
    tmp_path: Path, num_workers: int, monkeypatch
) -> None:
    """3 batches, state_dict, a new loader with load_state_dict: the remaining batches are
    exactly the uninterrupted epoch's remaining ones, and the skipped windows are not loaded."""
    write_dataset(tmp_path)
    kw = dict(windows_per_epoch=48, batch_size=8, num_workers=num_workers)  # 6 batches
    full = epoch_batches(make_dm(tmp_path, **kw), 2)
    assert len(full) == 6

    first = make_dm(tmp_path, **kw).train_dataloader()
    assert isinstance(first, ResumableDataLoader)
    first.sampler.set_epoch(2)
    it = iter(first)
    head = [next(it) for _ in range(3)]
    assert_batches_equal(head, full[:3])
    state = first.state_dict()
    assert state == {"epoch": 2, "batches_delivered": 3}

    loaded: list[int] = []
    if num_workers == 0:  # with workers the dataset is read in other processes
        get = WindowDataset.__getitems__  # the loader fetches whole batches
        monkeypatch.setattr(
            WindowDataset, "__getitems__", lambda ds, i: loaded.extend(i) or get(ds, i)
        )
    second = make_dm(tmp_path, **kw).train_dataloader()
    second.load_state_dict(state)
    assert second.state_dict() == state  # loaded but not yet used: reported as loaded
    second.sampler.set_epoch(2)  # Lightning calls set_epoch after load_state_dict
    assert len(second) == 6  # Lightning counts the skipped batches as done
    rest = list(second)
    assert_batches_equal(rest, full[3:])
    assert second.state_dict() == {"epoch": 2, "batches_delivered": 6}
    if num_workers == 0:
        assert sorted(loaded) == list(range(2 * 48 + 3 * 8, 3 * 48))  # skipped: never loaded
    # the skip applies once: the next iteration is a whole epoch again
    assert_batches_equal(list(second), full)


def test_loader_state_of_another_epoch_is_dropped(tmp_path: Path) -> None:
    """A checkpoint from the end of epoch 1 resumes at epoch 2's first batch."""
    write_dataset(tmp_path)
    dm = make_dm(tmp_path)
    full = epoch_batches(dm, 2)
    loader = dm.train_dataloader()
    assert loader.state_dict() == {"epoch": 0, "batches_delivered": 0}  # nothing delivered yet
    loader.load_state_dict({"epoch": 1, "batches_delivered": len(loader)})
    loader.sampler.set_epoch(2)
    assert_batches_equal(list(loader), full)
    assert loader.state_dict() == {"epoch": 2, "batches_delivered": len(full)}
    with pytest.raises(ValueError, match="batches_delivered"):
        loader.load_state_dict({"epoch": 1})
    with pytest.raises(ValueError, match=">= 0"):
        loader.load_state_dict({"epoch": 1, "batches_delivered": -1})


def test_sampler_skip_next_skips_this_ranks_share_once() -> None:
    s = WindowSampler(37, rank=1, world_size=2)
    s.set_epoch(3)
    share = list(s)
    s.skip_next(4)
    assert list(s) == share[4:] and share[4] == 3 * 37 + 1 + 4 * 2
    assert list(s) == share and len(s) == len(share)
    s.skip_next(len(share) + 5)
    assert list(s) == []
    with pytest.raises(ValueError):
        s.skip_next(-1)


def test_ranks_resume_their_own_shares_from_rank_zeros_state(tmp_path: Path) -> None:
    """DDP: a checkpoint holds rank 0's loader state; each rank loads it and continues with the
    rest of its own share (all ranks have the same number of batches)."""
    write_dataset(tmp_path)
    ds = make_dm(tmp_path, windows_per_epoch=64, batch_size=8).train_dataloader().dataset

    def rank_loader(rank: int) -> ResumableDataLoader:
        sampler = WindowSampler(len(ds), rank=rank, world_size=2)
        sampler.set_epoch(1)
        return ResumableDataLoader(ds, sampler=sampler, batch_size=8)

    uninterrupted = {rank: list(rank_loader(rank)) for rank in (0, 1)}
    assert len(uninterrupted[0]) == len(uninterrupted[1]) == 4
    interrupted = rank_loader(0)
    it = iter(interrupted)
    next(it), next(it)
    state = interrupted.state_dict()
    assert state == {"epoch": 1, "batches_delivered": 2}
    for rank in (0, 1):
        resumed = rank_loader(rank)
        resumed.load_state_dict(state)
        assert_batches_equal(list(resumed), uninterrupted[rank][2:])


def test_loaders_leave_the_global_torch_rng_alone(tmp_path: Path) -> None:
    """Creating loader iterators draws no numbers from torch's global generator (DataLoader's
    default), so a resumed run's random numbers do not depend on where iteration restarted."""
    write_dataset(tmp_path)
    for workers in (0, 2):
        dm = make_dm(tmp_path, num_workers=workers)
        before = torch.get_rng_state()
        for loader in (dm.train_dataloader(), dm.val_dataloader()):
            next(iter(loader))
        assert torch.equal(torch.get_rng_state(), before)


# ----------------------------------------------------------------------------- seed layout


def write_seed_file(path: Path, states: np.ndarray, actions: np.ndarray, state_only=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("traj_per_file", data=1)
        g = f.create_group("traj0")
        if state_only:
            g.create_dataset("images", data=states.astype(np.float32))
            g.create_dataset("states", data=np.zeros_like(states))
        else:
            g.create_dataset("states", data=states)
        g.create_dataset("actions", data=actions)
        g.create_dataset("pad_mask", data=np.ones(len(states), np.float32))


@pytest.mark.parametrize("state_only", [False, True])
def test_seed_layout_loads(tmp_path: Path, state_only: bool) -> None:
    for ep, t in enumerate(LENGTHS):
        s, a = encoded_episode(ep, t, ds=6)
        write_seed_file(tmp_path / f"batch{ep % 2}" / f"rollout_{ep}.h5", s, a, state_only)
    dm = make_dm(tmp_path)
    assert (dm.state_dim, dm.action_dim) == (6, DA)
    assert dm.num_train_episodes + dm.num_val_episodes == len(LENGTHS)
    for b in epoch_batches(dm, 0):
        for s, a, p in zip(b["states"], b["actions"], b["pad_mask"], strict=True):
            check_window(s.numpy(), a.numpy(), p.numpy(), dict(enumerate(LENGTHS)))


# ----------------------------------------------------------------------------- normalisation


def test_normalisation_stats_and_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for ep, t in enumerate(LENGTHS):
        s = (rng.normal(size=(t, DS)) * [1, 5, 0.1, 0] + [0, 3, -2, 7]).astype(np.float32)
        write_episode(tmp_path / f"rollout_{ep:05d}.h5", states=s, actions=np.zeros((t, DA)))
    plain = make_dm(tmp_path)
    torch.testing.assert_close(plain.state_mean, torch.zeros(DS))
    torch.testing.assert_close(plain.state_std, torch.ones(DS))
    dm = make_dm(tmp_path, normalize_states=True)
    assert dm.state_mean.dtype == torch.float32 and dm.state_mean.shape == (DS,)
    assert dm.state_std[3].item() == pytest.approx(1e-2)  # constant dimension: std floor
    train = dm.train_dataloader().dataset
    real = (train.states[train.pad_mask > 0] - dm.state_mean.numpy()) / dm.state_std.numpy()
    np.testing.assert_allclose(real[:, :3].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(real[:, :3].std(0), 1, atol=1e-4)
    # Batches carry raw states either way (the model normalises): same windows, same values.
    assert plain.train_files == dm.train_files
    raw = next(iter(plain.train_dataloader()))
    batch = next(iter(dm.train_dataloader()))
    torch.testing.assert_close(batch["states"], raw["states"])

    sd = dm.state_dict()
    other = make_dm(tmp_path, normalize_states=True, split_seed=9)  # different stats
    assert not torch.equal(other.state_mean, sd["state_mean"])
    other.load_state_dict(sd)
    torch.testing.assert_close(other.state_mean, sd["state_mean"])
    torch.testing.assert_close(other.state_std, sd["state_std"])
    fresh = RolloutDataModule(str(tmp_path), normalize_states=True, split_seed=9)
    fresh.load_state_dict(sd)  # before setup, as when resuming: setup keeps the loaded stats
    fresh.setup("fit")
    torch.testing.assert_close(fresh.state_mean, sd["state_mean"])
    with pytest.raises(ValueError, match="state_dim"):
        fresh.load_state_dict({**sd, "state_mean": torch.zeros(DS + 1)})


# ----------------------------------------------------------------------------- bad data


def truncated_file(root: Path) -> Path:
    s, a = encoded_episode(90, 20)
    p = write_episode(root / "rollout_00090.h5", states=s, actions=a)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return p


def no_actions_file(root: Path) -> Path:
    p = root / "rollout_00091.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("traj0/states", data=np.zeros((20, DS), np.float32))
        f.create_dataset("traj0/pad_mask", data=np.ones(20, np.float32))
    return p


def wrong_size_file(root: Path) -> Path:
    s, a = encoded_episode(92, 20, ds=DS + 1)
    return write_episode(root / "rollout_00092.h5", states=s, actions=a)


def nan_actions_file(root: Path) -> Path:
    s, a = encoded_episode(93, 20)
    p = write_episode(root / "rollout_00093.h5", states=s, actions=a)
    with h5py.File(p, "r+") as f:
        f["traj0/actions"][3, 1] = np.nan
    return p


BAD_MAKERS = {
    "truncated": truncated_file,
    "missing_actions": no_actions_file,
    "inconsistent_state_size": wrong_size_file,
    "nan_actions": nan_actions_file,
}


@pytest.mark.parametrize("kind", list(BAD_MAKERS))
def test_bad_file_raises_naming_the_file(tmp_path: Path, kind: str) -> None:
    write_dataset(tmp_path)
    bad = BAD_MAKERS[kind](tmp_path)
    with pytest.raises(RolloutFormatError, match=re.escape(str(bad))) as info:
        make_dm(tmp_path)
    if kind == "inconsistent_state_size":
        assert f"{DS + 1}" in str(info.value) and f"{DS} in" in str(info.value)
    if kind == "missing_actions":
        assert "traj0/actions" in str(info.value)
    if kind == "nan_actions":
        assert "NaN" in str(info.value)


def test_action_labels_select_the_experts_intended_actions(tmp_path: Path) -> None:
    """``action_labels="expert_actions"``: windows carry the files' DART labels at the same
    states; a file without them is a bad file named in the error."""
    for ep, t in enumerate(LENGTHS):
        s, a = encoded_episode(ep, t)
        write_episode(tmp_path / f"rollout_{ep:05d}.h5", states=s, actions=a, expert_actions=-a)
    plain, dart = make_dm(tmp_path), make_dm(tmp_path, action_labels="expert_actions")
    for b_plain, b_dart in zip(epoch_batches(plain, 0), epoch_batches(dart, 0), strict=True):
        torch.testing.assert_close(b_dart["states"], b_plain["states"], rtol=0, atol=0)
        torch.testing.assert_close(b_dart["actions"], -b_plain["actions"], rtol=0, atol=0)
    s, a = encoded_episode(9, 20)
    write_episode(tmp_path / "rollout_00009.h5", states=s, actions=a)
    with pytest.raises(RolloutFormatError, match=r"rollout_00009.h5: no traj0/expert_actions"):
        make_dm(tmp_path, action_labels="expert_actions")
    with pytest.raises(ValueError, match=r"action_labels must be one of"):
        make_dm(tmp_path, action_labels="intended")


def test_bad_first_file_raises_at_construction(tmp_path: Path) -> None:
    write_dataset(tmp_path / "b")
    (tmp_path / "a").mkdir()
    bad = no_actions_file(tmp_path / "a")
    with pytest.raises(RolloutFormatError, match=re.escape(str(bad))):
        RolloutDataModule(str(tmp_path))


@pytest.mark.parametrize("missing", [False, True])
def test_empty_or_missing_folder_names_it(tmp_path: Path, missing: bool) -> None:
    folder = tmp_path / "nothing_here"
    if not missing:
        folder.mkdir()
        (folder / "notes.txt").write_text("no rollouts")
    with pytest.raises(ValueError, match=re.escape(str(folder))):
        RolloutDataModule(str(folder))


def test_skip_bad_files(tmp_path: Path) -> None:
    good = write_dataset(tmp_path / "batch1")
    bad_dir = tmp_path / "batch0"  # sorts first: the dimension probe must skip bad files too
    bad_dir.mkdir()
    bad = [truncated_file(bad_dir), no_actions_file(bad_dir), nan_actions_file(bad_dir)]
    bad.append(wrong_size_file(tmp_path / "batch2"))
    with pytest.warns(SkippedRolloutWarning) as record:
        dm = make_dm(tmp_path, skip_bad_files=True)
        dm.setup("fit")  # a second setup does not report again
    messages = [str(w.message) for w in record if issubclass(w.category, SkippedRolloutWarning)]
    assert len(messages) == len(bad)
    for p in bad:
        assert sum(str(p) in m for m in messages) == 1
    assert dm.num_skipped == len(bad)
    assert {p for p, _ in dm.skipped_files} == set(bad)
    assert sorted(dm.train_files + dm.val_files) == sorted(good)
    assert (dm.state_dim, dm.action_dim) == (DS, DA)
    for b in epoch_batches(dm, 0):
        assert torch.isfinite(b["states"]).all() and b["states"].shape[1:] == (H + 1, DS)


def test_all_files_bad_with_skip_names_folder(tmp_path: Path) -> None:
    no_actions_file(tmp_path)
    with pytest.warns(SkippedRolloutWarning), pytest.raises(ValueError, match=str(tmp_path)):
        RolloutDataModule(str(tmp_path), skip_bad_files=True)


# ----------------------------------------------------------------------------- Lightning


class TinyModel(L.LightningModule):
    def __init__(self, state_dim: int, action_dim: int) -> None:
        super().__init__()
        self.net = torch.nn.Linear(state_dim, action_dim)
        self.train_batches: list[dict[str, torch.Tensor]] = []

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        pred = self.net(batch["states"][:, :-1])
        mask = batch["pad_mask"][:, :-1, None]
        return ((pred - batch["actions"]) ** 2 * mask).sum() / mask.sum().clamp(min=1)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.train_batches.append({k: v.clone() for k, v in batch.items()})
        return self._loss(batch)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_trainer_iterates_and_sets_sampler_epoch(tmp_path: Path) -> None:
    write_dataset(tmp_path)
    dm = RolloutDataModule(
        str(tmp_path), horizon=H, batch_size=4, windows_per_epoch=4, val_windows=4, seed=1
    )
    model = TinyModel(dm.state_dim, dm.action_dim)
    trainer = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's num_workers / log-interval hints
        trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 2 and trainer.current_epoch >= 1
    sampler = trainer.train_dataloader.sampler
    assert type(sampler) is WindowSampler  # Lightning kept our sampler
    assert sampler.epoch == 1  # set by Lightning: one batch per epoch, epochs 0 and 1
    assert len(model.train_batches) == 2
    ds = dm.train_dataloader().dataset
    for epoch, batch in enumerate(model.train_batches):
        expected = torch.stack([ds[epoch * len(ds) + i]["states"] for i in range(len(ds))])
        torch.testing.assert_close(batch["states"], expected, rtol=0, atol=0)
    assert "val_loss" in trainer.callback_metrics


def test_importing_pourlit_destroys_the_process_group_at_exit(tmp_path: Path) -> None:
    """A gloo group left to interpreter finalization can abort a finished DDP rank at exit;
    importing pourlit registers an atexit teardown. A handler registered before the import runs
    after pourlit's (atexit is last-in, first-out) and sees the group gone."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed not available")
    script = (
        "import atexit, torch.distributed as dist\n"
        "atexit.register(lambda: print('initialized at exit:', dist.is_initialized()))\n"
        "import pourlit\n"
        f"dist.init_process_group('gloo', init_method='file://{tmp_path}/store', rank=0, "
        "world_size=1)\n"
        "print('initialized:', dist.is_initialized())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["initialized: True", "initialized at exit: False"]


class RecordingModel(L.LightningModule):
    """Records each training batch's first-step (episode, t) codes into ``out_dir/rank{r}.pt``."""

    def __init__(self, out_dir: str) -> None:
        super().__init__()
        self.net = torch.nn.Linear(DS, DA)
        self.out_dir = out_dir
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.seen.append(batch["states"][:, 0, :2].clone())
        return self.net(batch["states"]).sum() * 0.0

    def on_train_end(self) -> None:
        sampler = self.trainer.train_dataloader.sampler
        record = {
            "sampler": type(sampler).__name__,
            "epoch": sampler.epoch,
            "seen": torch.stack(self.seen),
        }
        torch.save(record, Path(self.out_dir) / f"rank{self.global_rank}.pt")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.slow
def test_ddp_ranks_get_disjoint_shares_of_the_epoch(tmp_path: Path) -> None:
    """Two CPU processes (ddp_spawn, gloo): Lightning keeps WindowSampler, rank r gets the
    single-process epoch's windows i with i % 2 == r, in both epochs."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed not available")
    write_dataset(tmp_path / "data")
    kw = dict(horizon=H, batch_size=4, windows_per_epoch=8, val_windows=4, val_fraction=0.1)
    dm = RolloutDataModule(str(tmp_path / "data"), **kw)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_epochs=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(RecordingModel(str(tmp_path)), datamodule=dm)
    single = make_dm(tmp_path / "data", **kw)
    ds = single.train_dataloader().dataset
    assert len(ds) == 8  # 8 = 2 ranks * batch 4: no rounding
    for rank in (0, 1):
        record = torch.load(tmp_path / f"rank{rank}.pt")
        assert record["sampler"] == "WindowSampler" and record["epoch"] == 1
        assert record["seen"].shape == (2, 4, 2)  # 2 epochs x one batch of 4 per rank
        for epoch in (0, 1):
            idx = range(epoch * 8 + rank, (epoch + 1) * 8, 2)
            expected = torch.stack([ds[i]["states"][0, :2] for i in idx])
            torch.testing.assert_close(record["seen"][epoch], expected, rtol=0, atol=0)
