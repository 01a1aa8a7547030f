"""Skill-prior training throughput: Lightning fit of SkillPriorModule vs a bare PyTorch loop.

Prints (median of --repeats runs, interleaved Lightning, bare, Lightning, bare, ... in one
process so that both see the same machine load):
  lightning  windows/s of Trainer.fit(SkillPriorModule, RolloutDataModule) on the CPU, with
             logger, checkpointing, progress bar, model summary and validation switched off
  bare       windows/s of a plain loop over the same networks: a fresh SkillPriorModule used as
             an nn.Module (forward + skill_prior_loss), RAdam with the module's settings and the
             module's early gradient clipping (clip_grad_norm_ for the first clip_grad_steps)
  overhead   bare / lightning - 1: the extra time per window that Lightning costs (goal <= 10%)

Both iterate the same datamodule's train_dataloader() (same windows in the same order, same
epoch boundaries, same batch size) and start from the same initial weights and RNG state. Only
the steady state is timed: from the start of step --warmup to the end of the last of --steps
optimizer steps (for Lightning a Callback takes the times at on_train_batch_start of step
--warmup and on_train_batch_end of the last step). Model and data settings are the defaults of
configs/skills/spirl_cl.yaml.

    python benchmarks/bench_skills.py [--data-dir data/pouring] [--steps 400] [--warmup 50]
        [--repeats 5] [--threads 1] [--json out]
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import torch
import yaml

from pourlit.data.datamodule import RolloutDataModule
from pourlit.data.rollout import list_rollouts
from pourlit.skills.module import SkillPriorModule

# The model settings of the default config (not a copy: read from it).
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "skills" / "spirl_cl.yaml"
MODEL_KW = yaml.safe_load(CONFIG.read_text())["model"]["init_args"]


def make_datamodule(args: argparse.Namespace) -> RolloutDataModule:
    dm = RolloutDataModule(
        str(args.data_dir),
        horizon=args.horizon,
        batch_size=args.batch_size,
        windows_per_epoch=args.windows_per_epoch,
        val_windows=1280,
        val_fraction=0.1,
        split_seed=0,
        seed=0,
        num_workers=0,
        normalize_states=True,
    )
    dm.setup("fit")
    return dm


def make_model(dm: RolloutDataModule, horizon: int, seed: int) -> SkillPriorModule:
    """A fresh module; the same seed gives the same initial weights (and RNG state after)."""
    torch.manual_seed(seed)
    return SkillPriorModule(
        dm.state_dim, dm.action_dim, horizon=horizon, env_config=dm.env_config, **MODEL_KW
    )


class SteadyStateTimer(L.Callback):
    """Times optimizer steps ``warmup`` .. ``steps - 1`` and keeps the last training loss."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps = warmup, steps
        self.t0: float | None = None
        self.t1: float | None = None
        self.last_loss = float("nan")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup and self.t0 is None:
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.steps and self.t1 is None:
            self.t1 = time.perf_counter()
            self.last_loss = float(outputs["loss"])

    def seconds(self) -> float:
        if self.t0 is None or self.t1 is None:
            raise RuntimeError("the Lightning run ended before the timed steps were complete")
        return self.t1 - self.t0


def lightning_run(
    dm: RolloutDataModule, args: argparse.Namespace, seed: int
) -> tuple[float, float]:
    """(windows/s over the steady state, loss of the last step) of Trainer.fit."""
    model = make_model(dm, args.horizon, seed)
    timer = SteadyStateTimer(args.warmup, args.steps)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[timer],
    )
    trainer.fit(model, datamodule=dm)
    dm.trainer = None  # detach, so that the bare loop's loaders start at epoch 0 as well
    windows = (args.steps - args.warmup) * args.batch_size
    return windows / timer.seconds(), timer.last_loss


def bare_run(dm: RolloutDataModule, args: argparse.Namespace, seed: int) -> tuple[float, float]:
    """(windows/s over the steady state, loss of the last step) of a plain PyTorch loop."""
    model = make_model(dm, args.horizon, seed)
    hp = model.hparams
    # what SkillPriorModule.on_fit_start does: adopt the datamodule's normalisation statistics
    with torch.no_grad():
        model.state_mean.copy_(dm.state_mean)
        model.state_std.copy_(dm.state_std.clamp(min=1e-6))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.RAdam(params, lr=hp.lr, betas=(0.9, 0.999))
    step, epoch = 0, 0
    t0 = t1 = None
    loss = torch.tensor(float("nan"))
    while step < args.steps:
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            if step == args.warmup:
                t0 = time.perf_counter()
            losses, _ = model._losses(batch)  # the module's forward + skill_prior_loss
            loss = losses["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if step < hp.clip_grad_steps:
                torch.nn.utils.clip_grad_norm_(params, hp.clip_grad_norm)
            opt.step()
            step += 1
            if step == args.steps:
                t1 = time.perf_counter()
                break
        epoch += 1
    assert t0 is not None and t1 is not None
    windows = (args.steps - args.warmup) * args.batch_size
    return windows / (t1 - t0), float(loss.detach())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data/pouring"),
        help="rollout files (default: the demo set of `pourlit collect`)",
    )
    ap.add_argument("--steps", type=int, default=400, help="optimizer steps per run (max_steps)")
    ap.add_argument("--warmup", type=int, default=50, help="first steps left out of the timing")
    ap.add_argument("--repeats", type=int, default=5, help="runs of each, interleaved")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--horizon", type=int, default=10)
    ap.add_argument("--windows-per-epoch", type=int, default=6400)
    ap.add_argument("--seed", type=int, default=0, help="initial weights and z sampling")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    if not 0 <= args.warmup < args.steps:
        ap.error(f"need 0 <= --warmup < --steps, got {args.warmup} and {args.steps}")
    if args.repeats < 1 or args.threads < 1:
        ap.error("--repeats and --threads must be >= 1")
    if not args.data_dir.exists() or not list_rollouts(args.data_dir):
        what = "does not exist" if not args.data_dir.exists() else "holds no rollout_*.h5 files"
        print(
            f"bench_skills: data directory {args.data_dir} {what}; collect the demonstrations "
            f"first (pourlit collect) or pass --data-dir",
            file=sys.stderr,
        )
        sys.exit(2)

    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")

    dm = make_datamodule(args)
    lit, bare, lit_loss, bare_loss = [], [], [], []
    for r in range(args.repeats):  # interleaved so both see the same machine load
        rate, loss = lightning_run(dm, args, args.seed)
        lit.append(rate)
        lit_loss.append(loss)
        rate, loss = bare_run(dm, args, args.seed)
        bare.append(rate)
        bare_loss.append(loss)
        print(
            f"  repeat {r + 1}/{args.repeats}: lightning {lit[-1]:8.0f}  bare {bare[-1]:8.0f} "
            "windows/s",
            flush=True,
        )

    lit_med, bare_med = statistics.median(lit), statistics.median(bare)
    ratio = bare_med / lit_med
    overhead = ratio - 1.0
    loss_diff = max(abs(a - b) for a, b in zip(lit_loss, bare_loss, strict=True))
    timed = args.steps - args.warmup
    res = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "lightning": L.__version__,
        "threads": args.threads,
        "data_dir": str(args.data_dir),
        "train_episodes": dm.num_train_episodes,
        "state_dim": dm.state_dim,
        "action_dim": dm.action_dim,
        "batch_size": args.batch_size,
        "horizon": args.horizon,
        "windows_per_epoch": args.windows_per_epoch,
        "model": MODEL_KW,
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "lightning_windows_per_s": round(lit_med, 1),
        "bare_windows_per_s": round(bare_med, 1),
        "lightning_runs": [round(x, 1) for x in lit],
        "bare_runs": [round(x, 1) for x in bare],
        "ratio_bare_over_lightning": round(ratio, 3),
        "lightning_overhead": round(overhead, 4),
        "final_loss_lightning": lit_loss[0],
        "final_loss_bare": bare_loss[0],
        "final_loss_max_abs_diff": loss_diff,
    }
    print(
        f"\npourlit skill-training benchmark  {res['date']}  {res['machine']}  "
        f"torch {res['torch']}  lightning {res['lightning']}  threads {args.threads}"
    )
    print(
        f"data: {args.data_dir} ({dm.num_train_episodes} train episodes, d_s {dm.state_dim}, "
        f"d_a {dm.action_dim}), batch {args.batch_size}, H {args.horizon}, normalize_states"
    )
    print(
        f"model: closed-loop SPiRL, hidden {MODEL_KW['hidden']}, latent "
        f"{MODEL_KW['latent_dim']}, {MODEL_KW['prior_blocks']} blocks, RAdam "
        f"{MODEL_KW['lr']:g}, clip {MODEL_KW['clip_grad_norm']:g} for "
        f"{MODEL_KW['clip_grad_steps']} steps"
    )
    print(
        f"medians of {args.repeats} interleaved runs of {args.steps} steps, the first "
        f"{args.warmup} untimed ({timed} timed steps = {timed * args.batch_size} windows)\n"
    )
    print(f"{'':12s}{'windows/s':>12s}{'ms/step':>10s}{'min':>10s}{'max':>10s}{'vs bare':>10s}")
    for name, med, runs in (("lightning", lit_med, lit), ("bare", bare_med, bare)):
        ms = 1000.0 * args.batch_size / med
        print(
            f"{name:12s}{med:12.0f}{ms:10.2f}{min(runs):10.0f}{max(runs):10.0f}"
            f"{med / bare_med:10.3f}"
        )
    print(f"\nratio bare / lightning: {ratio:.3f}")
    print(f"Lightning overhead: {100 * overhead:+.1f}% time per window (goal <= 10%)")
    same = "same" if loss_diff < 1e-5 else "DIFFERENT"
    print(
        f"loss after step {args.steps}: lightning {lit_loss[0]:.6f}, bare {bare_loss[0]:.6f} "
        f"(max |diff| over repeats {loss_diff:.2e}: {same} computation)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
