"""``pourlit collect``: scripted-expert episodes -> one rollout HDF5 file per episode.

Shards by rank (``--rank/--world-size`` or the torch distributed variables ``RANK`` and
``WORLD_SIZE``): rank r writes only file indices i with ``i % world_size == r``, so several
processes or machines can fill one folder without clashing, and a re-run continues numbering.
Collectors started into one folder without ranks share it too (``pourlit.data.folder``): each
records different episodes and takes the next free file name. ``summary.json`` covers every
rollout file in the folder and every run that wrote there.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pourlit import __version__
from pourlit.data.folder import FolderLock, file_record, remove_stale_temps, update_summary
from pourlit.data.rollout import next_free_index, rollout_path, write_episode
from pourlit.errors import yaml_reason
from pourlit.expert.pour import ScriptedPourExpert
from pourlit.rl.acting import PriorPolicy
from pourlit.rl.handover import Handover
from pourlit.sim.env import EnvConfig, PouringVecEnv
from pourlit.sim.task import ACTION_NAMES, OBS_DIM


class ConfigError(ValueError):
    """A bad configuration value or file; the message names what and where."""


@dataclass
class CollectConfig:
    """Settings of ``pourlit collect`` (YAML keys and ``--flags`` share these names)."""

    episodes: int = 200  # episodes to attempt (failures are not written unless keep_failures)
    num_envs: int = 2
    out: str = "data/pouring"
    seed: int = 0
    keep_failures: bool = False
    images: bool = False  # store camera images in traj0/images
    image_size: int = 128
    camera: str = "front"
    action_noise: float = 0.05  # std of Gaussian noise on the expert's actions
    # DAgger-style handover (pourlit.rl.handover): a skill checkpoint whose prior rollouts
    # drive each episode until the expert takes over, 0..handover_delay control steps after the
    # learner lifted the bottle; only episodes the expert took over are written. None: the
    # expert drives from the start.
    learner: str | None = None
    handover_delay: int = 120
    rank: int = 0
    world_size: int = 1
    env: dict = field(default_factory=dict)  # EnvConfig fields (num_envs comes from above)

    def validate(self) -> None:
        for name in ("episodes", "num_envs", "world_size", "image_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(f"rank must be in [0, world_size), got {self.rank}/{self.world_size}")
        if self.action_noise < 0:
            raise ConfigError(f"action_noise must be >= 0, got {self.action_noise}")
        if self.handover_delay < 0:
            raise ConfigError(f"handover_delay must be >= 0, got {self.handover_delay}")
        if self.learner is not None and not Path(self.learner).is_file():
            raise ConfigError(f"{self.learner}: learner checkpoint not found")

    def env_config(self) -> EnvConfig:
        env_n = (self.env or {}).get("num_envs")
        if env_n is not None and env_n != self.num_envs:
            raise ConfigError(
                f"num_envs given twice ({self.num_envs} and env.num_envs {env_n}): "
                "give it once, as num_envs (or --num-envs)"
            )
        try:
            return EnvConfig.merged(self.env, num_envs=self.num_envs)
        except (TypeError, ValueError) as e:
            raise ConfigError(str(e)) from e


def load_collect_config(path: str | os.PathLike[str] | None, overrides: dict) -> CollectConfig:
    """Read a YAML collect config, apply non-None ``overrides``; unknown keys are an error."""
    import yaml

    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({yaml_reason(e)})") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a mapping of settings at the top level")
        known = {f.name for f in fields(CollectConfig)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"{p}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
    data.update({k: v for k, v in overrides.items() if v is not None})
    cfg = CollectConfig(**data)
    cfg.validate()
    try:
        cfg.env_config()
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path is not None else str(e)) from e
    return cfg


def _prepare_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: output path exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as e:
        raise ConfigError(f"{out}: output folder is not writable ({e.strerror or e})") from e


@dataclass
class _Buffer:
    states: list = field(default_factory=list)
    actions: list = field(default_factory=list)
    expert_actions: list = field(default_factory=list)
    rewards: list = field(default_factory=list)
    images: list = field(default_factory=list)


def _load_learner(cfg: CollectConfig) -> PriorPolicy | None:
    """The handover learner (prior rollouts of the skill checkpoint ``cfg.learner``), checked
    before anything touches the disk: not a skill checkpoint, or state/action sizes that are
    not the env's, is a ``ConfigError``."""
    if cfg.learner is None:
        return None
    try:
        learner = PriorPolicy(cfg.learner, cfg.num_envs, seed=cfg.seed)
    except Exception as e:  # not a checkpoint, or not a skill checkpoint
        if str(e).startswith(f"{cfg.learner}: "):  # already names the file and what is wrong
            raise ConfigError(str(e)) from e
        raise ConfigError(f"{cfg.learner}: not a skill checkpoint ({e})") from e
    sizes = (learner.skills.state_dim, learner.skills.action_dim)
    if sizes != (OBS_DIM, len(ACTION_NAMES)):
        raise ConfigError(
            f"{cfg.learner}: learner has state/action sizes {sizes[0]}/{sizes[1]}, the env "
            f"{OBS_DIM}/{len(ACTION_NAMES)}"
        )
    return learner


def collect(cfg: CollectConfig, progress: bool = True) -> dict:
    """Run the expert, write rollout files, return (and write) the summary dict."""
    cfg.validate()
    env_cfg = cfg.env_config()  # before touching the disk: a bad config creates nothing
    learner = _load_learner(cfg)
    out = Path(cfg.out)
    _prepare_out_dir(out)
    lock = FolderLock(out)
    slot = lock.claim_slot(cfg.rank)
    remove_stale_temps(out)  # left by a collector killed mid-write
    # A fresh folder is seeded by (seed, rank) alone; a run that continues a folder also mixes
    # in its first file index, so re-running the same command adds new episodes, not copies,
    # and a collector running beside others of its rank in the folder (slot > 0) mixes in its slot.
    first = next_free_index(out, cfg.rank, cfg.world_size)
    entropy = [cfg.seed, cfg.rank] if first == cfg.rank else [cfg.seed, cfg.rank, first]
    if slot > 0:
        entropy += [0x5107, slot]
    n = cfg.num_envs
    start = time.perf_counter()
    stats = {"attempted": 0, "written": 0, "success": 0, "poured": [], "spilled": [], "steps": 0}
    run = {"id": f"{os.getpid()}-{time.time_ns()}", "status": "running", "slot": slot}
    run["started_at"] = round(time.time(), 3)  # unix time
    run |= {"rank": cfg.rank, "world_size": cfg.world_size, "seed": cfg.seed, "num_envs": n}

    def run_record(status: str = "running") -> dict:
        return {
            **run,
            "status": status,
            "attempted": stats["attempted"],
            "written": stats["written"],
            "success": stats["success"],
            "poured_sum": float(np.sum(stats["poured"])),
            "spilled_sum": float(np.sum(stats["spilled"])),
            "env_steps": stats["steps"],
            "wall_seconds": round(time.perf_counter() - start, 2),
            "config": asdict(cfg),
            "pourlit_version": __version__,
        }

    failed: list[BaseException] = []  # a write failed: the queued ones are dropped

    next_index = first  # this shard's next name: first, first + world_size, ...

    def write_next(record: dict, **episode) -> None:
        """Write the episode under this shard's next name, then record it. Names follow the
        shard's own count (rank r: first, first + world_size, ...), not the folder's highest
        index, which other ranks' progress moves: the same command names the same episodes
        the same, and the datamodule's split (by name order) is reproducible. A name another
        collector of this rank took first (slot > 0) moves this one past the folder's end."""
        nonlocal next_index
        if failed:
            return  # the run is stopping on that failure (reported by the main thread)
        while True:
            path = rollout_path(out, next_index)
            try:
                write_episode(path, **episode)
                break
            except FileExistsError:  # another collector of this rank took that name first
                next_index = next_free_index(out, cfg.rank, cfg.world_size)
            except BaseException as e:
                failed.append(e)
                raise
        next_index += cfg.world_size
        stats["written"] += 1  # (only this writer thread counts it)
        record["written"] = stats["written"]
        update_summary(out, lock, records={path.name: file_record(path)}, run=record)

    try:
        update_summary(out, lock, run=run_record())  # also covers files a killed run left
        env = PouringVecEnv(env_cfg)
    except BaseException:
        lock.close()
        raise
    renderer = None
    # Files are written by one background thread, off the simulation's hot path (at 1000+
    # envs on a GPU many episodes end per step); its errors surface at the next step.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pourlit-writer")
    pending: list[Future] = []
    try:
        if cfg.images:
            from pourlit.sim.render import Renderer

            renderer = Renderer(env.model, cfg.image_size, cfg.image_size, cfg.camera)
        obs = env.reset(seed=entropy)
        expert = ScriptedPourExpert(env, seed=cfg.seed, action_noise=cfg.action_noise)
        handover = None
        if learner is not None:
            handover = Handover(expert, learner, cfg.handover_delay, cfg.seed)
        (expert if handover is None else handover).begin()
        bufs = [_Buffer() for _ in range(n)]
        started = n
        active = np.ones(n, dtype=bool)
        if cfg.episodes < n:
            active[cfg.episodes :] = False
            started = cfg.episodes
        bar = tqdm(total=cfg.episodes, desc="collect", unit="ep", disable=not progress)
        env_cfg_json = json.dumps(env_cfg.to_dict())
        while active.any():
            # Executed == recorded: the env steps the float32 actions that are stored.
            if handover is None:
                actions = expert.act().astype(np.float32)
                intended = expert.intended.astype(np.float32)  # the DART labels
            else:
                actions, intended = handover.act(obs)
            obs_host = obs.cpu().numpy()  # one device-to-host copy per step for all envs
            for i in np.flatnonzero(active):
                bufs[i].states.append(obs_host[i].copy())
                bufs[i].actions.append(actions[i].copy())
                bufs[i].expert_actions.append(intended[i].copy())
                if renderer is not None:
                    bufs[i].images.append(renderer.frame(env.mj_data(i)))
            obs, reward, terminated, truncated, info = env.step(torch.as_tensor(actions))
            stats["steps"] += int(active.sum())
            reward_host = reward.cpu().numpy()
            for i in np.flatnonzero(active):
                bufs[i].rewards.append(float(reward_host[i]))
            ended = np.flatnonzero((terminated | truncated).cpu().numpy() & active)
            for f in [f for f in pending if f.done()]:
                f.result()  # re-raises a failed write here, in the main thread
                pending.remove(f)
            for i in ended:
                ok = bool(info["success"][i])
                stats["attempted"] += 1
                stats["success"] += ok
                stats["poured"].append(float(info["poured_fraction"][i]))
                stats["spilled"].append(float(info["spilled_fraction"][i]))
                expert_from = 0 if handover is None else int(handover.expert_from[i])
                if (ok or cfg.keep_failures) and expert_from >= 0:
                    b = bufs[i]
                    t = len(b.actions)
                    term = np.zeros(t, np.uint8)
                    trunc = np.zeros(t, np.uint8)
                    term[-1], trunc[-1] = bool(terminated[i]), bool(truncated[i])
                    pending.append(writer.submit(
                        write_next,
                        run_record(),
                        states=np.stack(b.states),
                        actions=np.stack(b.actions),
                        expert_actions=np.stack(b.expert_actions),
                        rewards=np.asarray(b.rewards, np.float32),
                        terminals=term,
                        truncated=trunc,
                        success=ok,
                        images=np.stack(b.images) if b.images else None,
                        attrs={
                            "seed": int(info["episode_seed"][i]),
                            "env_config": env_cfg_json,
                            "obs_names": list(env.obs_names),
                            "action_names": list(env.action_names),
                            "expert_params": expert.params(i),
                            "expert_seed": cfg.seed,
                            "expert_from": expert_from,
                            "learner": cfg.learner or "",
                            "action_noise": cfg.action_noise,
                            "poured_fraction": stats["poured"][-1],
                            "spilled_fraction": stats["spilled"][-1],
                            "rank": cfg.rank,
                            "world_size": cfg.world_size,
                            "image_camera": cfg.camera if cfg.images else "",
                        },
                    ))  # fmt: skip
                bufs[i] = _Buffer()
                bar.update(1)
                elapsed = time.perf_counter() - start
                bar.set_postfix(
                    success=f"{stats['success'] / stats['attempted']:.2f}",
                    written=stats["written"],
                    steps_s=f"{stats['steps'] / elapsed:.0f}",
                )
                if started < cfg.episodes:
                    started += 1
                else:
                    active[i] = False
            if len(ended):
                (expert if handover is None else handover).begin(ended)
        for f in pending:
            f.result()
        bar.close()
        status = "finished"
    except BaseException as e:
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        raise
    finally:
        writer.shutdown(wait=True)  # files already queued are completed, even on an error
        if renderer is not None:
            renderer.close()
        env.close()
        if status != "finished":
            with contextlib.suppress(Exception):  # the error being raised is the one to report
                update_summary(out, lock, run=run_record(status))
            lock.close()
    wall = time.perf_counter() - start
    summary = {
        "episodes_attempted": stats["attempted"],
        "episodes_written": stats["written"],
        "success_rate": stats["success"] / max(1, stats["attempted"]),
        "mean_poured_fraction": float(np.mean(stats["poured"])) if stats["poured"] else 0.0,
        "mean_spilled_fraction": float(np.mean(stats["spilled"])) if stats["spilled"] else 0.0,
        "env_steps": stats["steps"],
        "wall_seconds": round(wall, 2),
        "env_steps_per_second": round(stats["steps"] / wall, 1),
        "unstable_episodes": env.stats["unstable"],
        "num_envs": n,
        "seed": cfg.seed,
        "rank": cfg.rank,
        "world_size": cfg.world_size,
        "pourlit_version": __version__,
        "config": asdict(cfg),
    }
    try:
        update_summary(out, lock, run=run_record("finished"))
    finally:
        lock.close()
    return summary
