"""Skill-prior training throughput: the training step before/after a change, and Lightning fit
of SkillPriorModule vs a bare PyTorch loop.

Prints (median of --repeats runs, all interleaved in one process so that every figure sees the
same machine load):

Training step (forward, losses, backward, optimizer step; no data loading, no clipping) on
--step-batches batches held in memory, --step-iters timed steps after --step-warmup untimed
ones per run:
  new        windows/s of the working tree's SkillPriorModule with its configure_optimizers()
  baseline   (--baseline REF) the same for git revision REF's SkillPriorModule: the ``pourlit``
             package of REF is extracted with ``git archive`` into a temporary directory and
             imported beside the working tree's (as in bench_sim.py); it gets the new module's
             initial weights (same state_dict keys) and the same batches
  ratio      new / baseline (goal >= 1.3; every ratio is the median over repeats of the
             ratio within a repeat), and a check that both compute the same thing: the
             largest relative difference of the loss terms and of the gradients for one batch,
             same weights, same z noise (float rounding, ~1e-6)
  spirl      (--spirl-ref PATH) the public SPiRL reference's ClSPiRLMdl (clvrai/spirl, PATH is
             a checkout or a bare git directory) at the same sizes with its own losses and
             RAdam (spirl_ref.py); ratio new / spirl (goal >= 1.5)

Lightning vs bare loop (as before the step comparison was added):
  lightning  windows/s of Trainer.fit(SkillPriorModule, RolloutDataModule) on the CPU, with
             logger, checkpointing, progress bar, model summary and validation switched off
  bare       windows/s of a plain loop over the same networks: a fresh SkillPriorModule used as
             an nn.Module (forward + skill_prior_loss), the module's configure_optimizers() and
             its early gradient clipping (clip_grad_norm_ for the first clip_grad_steps)
  overhead   bare / lightning - 1: the extra time per window that Lightning costs (goal <= 10%)

Both loops iterate the same datamodule's train_dataloader() (same windows in the same order,
same epoch boundaries, same batch size) and start from the same initial weights and RNG state.
Only the steady state is timed: from the start of step --warmup to the end of the last of
--steps optimizer steps (for Lightning a Callback takes the times at on_train_batch_start of
step --warmup and on_train_batch_end of the last step). Model and data settings are the
defaults of configs/skills/spirl_cl.yaml; --hidden overrides the width (the issue's reference
sizes use 128). The step batches are the data's training windows, or with --synthetic random
windows with the reference's sizes (d_s 47, d_a 7).

    python benchmarks/bench_skills.py [--data-dir data/pouring] [--steps 400] [--warmup 50]
        [--repeats 5] [--threads 1] [--batch-size 64] [--hidden 256] [--baseline REF]
        [--spirl-ref PATH] [--synthetic] [--step-iters 100] [--no-lightning] [--json out]
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from baseline import import_at_revision  # benchmarks/baseline.py (run as a script)

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


def model_kw(args: argparse.Namespace) -> dict[str, Any]:
    """The config's model settings, with --hidden if given."""
    return {**MODEL_KW, "hidden": args.hidden or MODEL_KW["hidden"]}


def make_model(
    dm: RolloutDataModule, args: argparse.Namespace, seed: int, cls: type = SkillPriorModule
) -> SkillPriorModule:
    """A fresh module; the same seed gives the same initial weights (and RNG state after)."""
    torch.manual_seed(seed)
    return cls(
        dm.state_dim,
        dm.action_dim,
        horizon=args.horizon,
        env_config=dm.env_config,
        **model_kw(args),
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
    model = make_model(dm, args, seed)
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
    model = make_model(dm, args, seed)
    hp = model.hparams
    # what SkillPriorModule.on_fit_start does: adopt the datamodule's normalisation statistics
    with torch.no_grad():
        model.state_mean.copy_(dm.state_mean)
        model.state_std.copy_(dm.state_std.clamp(min=1e-6))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = model.configure_optimizers()
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


# -- the training step before/after ----------------------------------------------------------


def load_baseline(ref: str, into: str) -> type:
    """SkillPriorModule of the ``pourlit`` package at git revision ``ref``, imported
    from ``into`` beside the working tree's (``baseline.import_at_revision``)."""
    mod = import_at_revision(ref, "pourlit.skills.module", into)
    return mod.SkillPriorModule


def step_batches(args: argparse.Namespace) -> tuple[list[dict[str, torch.Tensor]], Any]:
    """(--step-batches batches, their datamodule or None): the first training batches of a
    datamodule of their own (so the Lightning/bare comparison's loaders are untouched), or
    with --synthetic random windows with the reference sizes d_s 47, d_a 7."""
    n, b, h = args.step_batches, args.batch_size, args.horizon
    if args.synthetic:
        g = torch.Generator().manual_seed(args.seed)
        return [
            {
                "states": torch.randn(b, h + 1, 47, generator=g),
                "actions": torch.randn(b, h, 7, generator=g),
                "pad_mask": torch.ones(b, h + 1),
            }
            for _ in range(n)
        ], None
    dm = make_datamodule(args)
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(0)
    batches = []
    for batch in loader:
        batches.append({k: v.clone() for k, v in batch.items()})
        if len(batches) == n:
            break
    return batches, dm


class StepRunner:
    """One module version's bare training step on fixed batches: forward, skill_prior_loss,
    backward, the module's own optimizer (no clipping, no data loading)."""

    def __init__(self, cls: type, batches: list, dm: Any, args: argparse.Namespace) -> None:
        torch.manual_seed(args.seed)
        d_s, d_a = batches[0]["states"].shape[-1], batches[0]["actions"].shape[-1]
        self.model = cls(d_s, d_a, horizon=args.horizon, **model_kw(args))
        if dm is not None:  # the data's normalisation, as on_fit_start adopts it
            with torch.no_grad():
                self.model.state_mean.copy_(dm.state_mean)
                self.model.state_std.copy_(dm.state_std.clamp(min=1e-6))
        self.model.train()
        self.batches = batches
        self.opt: torch.optim.Optimizer | None = None
        self.i = 0

    def grads(self, batch: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
        """Loss terms and parameter gradients for ``batch`` with z noise from ``seed``."""
        self.model.zero_grad(set_to_none=True)
        torch.manual_seed(seed)
        losses, _ = self.model._losses(batch)
        losses["loss"].backward()
        out = {f"loss/{k}": v.detach().clone() for k, v in losses.items()}
        out.update({n: p.grad.clone() for n, p in self.model.named_parameters()})
        self.model.zero_grad(set_to_none=True)
        return out

    def step(self) -> None:
        if self.opt is None:
            self.opt = self.model.configure_optimizers()
        losses, _ = self.model._losses(self.batches[self.i % len(self.batches)])
        self.i += 1
        self.opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        self.opt.step()


def step_rate(runner: Any, args: argparse.Namespace) -> float:
    """Windows/s of ``runner.step()`` over --step-iters steps after --step-warmup."""
    for _ in range(args.step_warmup):
        runner.step()
    t = time.perf_counter()
    for _ in range(args.step_iters):
        runner.step()
    return args.step_iters * args.batch_size / (time.perf_counter() - t)


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over repeats of a[r] / b[r]: runs of one repeat are seconds apart and share the
    machine's load, which drifts more than that between repeats on a shared machine."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def max_rel_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """max over entries of max |a - b| / max |b| (the same keys in both)."""
    if a.keys() != b.keys():
        raise ValueError(f"different parameters: {sorted(a.keys() ^ b.keys())}")
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp(min=1e-12)) for k in a)


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
    ap.add_argument("--hidden", type=int, help="model width (default: the config's)")
    ap.add_argument("--windows-per-epoch", type=int, default=6400)
    ap.add_argument("--seed", type=int, default=0, help="initial weights and z sampling")
    ap.add_argument("--baseline", metavar="REF", help="also time the step of git revision REF")
    ap.add_argument(
        "--spirl-ref", metavar="PATH", help="also time the SPiRL reference's ClSPiRLMdl step"
    )
    ap.add_argument(
        "--synthetic", action="store_true", help="step comparison on random d_s 47 / d_a 7 windows"
    )
    ap.add_argument("--step-batches", type=int, default=8, help="batches the steps cycle over")
    ap.add_argument("--step-iters", type=int, default=100, help="timed steps per step run")
    ap.add_argument("--step-warmup", type=int, default=10, help="untimed steps per step run")
    ap.add_argument(
        "--no-lightning", action="store_true", help="skip the Lightning vs bare loop comparison"
    )
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    if not 0 <= args.warmup < args.steps:
        ap.error(f"need 0 <= --warmup < --steps, got {args.warmup} and {args.steps}")
    if args.repeats < 1 or args.threads < 1 or args.step_iters < 1 or args.step_batches < 1:
        ap.error("--repeats, --threads, --step-iters and --step-batches must be >= 1")
    need_data = not (args.synthetic and args.no_lightning)
    if need_data and (not args.data_dir.exists() or not list_rollouts(args.data_dir)):
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

    batches, step_dm = step_batches(args)
    runners: dict[str, Any] = {"new": StepRunner(SkillPriorModule, batches, step_dm, args)}
    same: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.baseline:
            try:
                base_cls = load_baseline(args.baseline, tmp)
            except subprocess.CalledProcessError as e:
                err = e.stderr.decode(errors="replace").strip() if e.stderr else str(e)
                print(f"bench_skills: --baseline {args.baseline}: {err}", file=sys.stderr)
                sys.exit(2)
            base = StepRunner(base_cls, batches, step_dm, args)
            base.model.load_state_dict(runners["new"].model.state_dict())
            runners["baseline"] = base
            new_g = runners["new"].grads(batches[0], args.seed)
            base_g = base.grads(batches[0], args.seed)
            same["losses"] = max_rel_diff(
                {k: v for k, v in new_g.items() if k.startswith("loss/")},
                {k: v for k, v in base_g.items() if k.startswith("loss/")},
            )
            same["gradients"] = max_rel_diff(new_g, base_g)
        if args.spirl_ref:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from spirl_ref import SpirlStepRunner  # only with --spirl-ref

            runners["spirl"] = SpirlStepRunner(args.spirl_ref, batches, args, model_kw(args), tmp)

        dm = None if args.no_lightning else make_datamodule(args)
        lit, bare, lit_loss, bare_loss = [], [], [], []
        step: dict[str, list[float]] = {k: [] for k in runners}
        for r in range(args.repeats):  # interleaved so every figure sees the same machine load
            line = f"  repeat {r + 1}/{args.repeats}:"
            for name, runner in runners.items():
                step[name].append(step_rate(runner, args))
                line += f"  {name} step {step[name][-1]:7.0f}"
            if dm is not None:
                rate, loss = lightning_run(dm, args, args.seed)
                lit.append(rate)
                lit_loss.append(loss)
                rate, loss = bare_run(dm, args, args.seed)
                bare.append(rate)
                bare_loss.append(loss)
                line += f"  lightning {lit[-1]:7.0f}  bare loop {bare[-1]:7.0f}"
            print(line + " windows/s", flush=True)

    kw = model_kw(args)
    d_s, d_a = batches[0]["states"].shape[-1], batches[0]["actions"].shape[-1]
    step_med = {k: statistics.median(v) for k, v in step.items()}
    res: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "threads": args.threads,
        "data_dir": None if args.synthetic and dm is None else str(args.data_dir),
        "step_batches": "synthetic" if args.synthetic else "data",
        "state_dim": d_s,
        "action_dim": d_a,
        "batch_size": args.batch_size,
        "horizon": args.horizon,
        "model": kw,
        "repeats": args.repeats,
        "step_iters": args.step_iters,
        "step_warmup": args.step_warmup,
        "baseline": args.baseline,
        "spirl_ref": args.spirl_ref,
        "step_windows_per_s": {k: round(v, 1) for k, v in step_med.items()},
        "step_runs": {k: [round(x, 1) for x in v] for k, v in step.items()},
    }
    print(
        f"\npourlit skill-training benchmark  {res['date']}  {res['machine']}  "
        f"torch {res['torch']}  lightning {res['lightning']}  threads {args.threads}  "
        f"load {res['load_average_1min_at_end']} (1 min, at the end)"
    )
    print(
        f"model: closed-loop SPiRL, d_s {d_s}, d_a {d_a}, H {args.horizon}, batch "
        f"{args.batch_size}, hidden {kw['hidden']}, latent {kw['latent_dim']}, "
        f"{kw['prior_blocks']} blocks; medians of {args.repeats} interleaved runs\n"
    )
    src = "random windows" if args.synthetic else f"windows of {args.data_dir}"
    print(
        f"training step (forward, losses, backward, optimizer step) on {args.step_batches} "
        f"batches of {src}, {args.step_iters} timed steps per run:"
    )
    print(f"{'':22s}{'windows/s':>10s}{'ms/step':>10s}{'min':>10s}{'max':>10s}")
    for name, med in step_med.items():
        label = {"baseline": f"baseline ({args.baseline})"}.get(name, name)
        ms = 1000.0 * args.batch_size / med
        print(f"{label:22s}{med:10.0f}{ms:10.2f}{min(step[name]):10.0f}{max(step[name]):10.0f}")
    if "baseline" in step_med:
        ratio = paired_ratio(step["new"], step["baseline"])
        res["step_ratio_new_over_baseline"] = round(ratio, 3)
        res["same_computation_max_rel_diff"] = same
        print(
            f"\nstep ratio new / baseline: {ratio:.3f} (goal >= 1.3; median of per-repeat ratios)"
        )
        ok = "same" if max(same.values()) < 1e-5 else "DIFFERENT"
        print(
            f"same batch, weights and z noise: max relative difference of the loss terms "
            f"{same['losses']:.1e}, of the gradients {same['gradients']:.1e} ({ok} computation)"
        )
    if "spirl" in step_med:
        for name in ("new", "baseline"):
            if name in step_med:
                r = paired_ratio(step[name], step["spirl"])
                res[f"step_ratio_{name}_over_spirl"] = round(r, 3)
                goal = " (goal >= 1.5)" if name == "new" else ""
                print(f"step ratio {name} / SPiRL reference: {r:.3f}{goal}")

    if dm is not None:
        lit_med, bare_med = statistics.median(lit), statistics.median(bare)
        ratio = paired_ratio(bare, lit)
        overhead = ratio - 1.0
        loss_diff = max(abs(a - b) for a, b in zip(lit_loss, bare_loss, strict=True))
        timed = args.steps - args.warmup
        res.update(
            {
                "train_episodes": dm.num_train_episodes,
                "windows_per_epoch": args.windows_per_epoch,
                "steps": args.steps,
                "warmup": args.warmup,
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
        )
        print(
            f"\nLightning vs bare loop on {args.data_dir} ({dm.num_train_episodes} train "
            f"episodes, d_s {dm.state_dim}, d_a {dm.action_dim}, normalize_states), RAdam "
            f"{kw['lr']:g}, clip {kw['clip_grad_norm']:g} for {kw['clip_grad_steps']} steps; "
            f"runs of {args.steps} steps, the first {args.warmup} untimed ({timed} timed steps "
            f"= {timed * args.batch_size} windows):"
        )
        print(f"{'':12s}{'windows/s':>12s}{'ms/step':>10s}{'min':>10s}{'max':>10s}{'vs bare':>10s}")
        for name, med, runs in (("lightning", lit_med, lit), ("bare loop", bare_med, bare)):
            ms = 1000.0 * args.batch_size / med
            print(
                f"{name:12s}{med:12.0f}{ms:10.2f}{min(runs):10.0f}{max(runs):10.0f}"
                f"{med / bare_med:10.3f}"
            )
        print(f"\nratio bare / lightning: {ratio:.3f} (median of per-repeat ratios)")
        print(f"Lightning overhead: {100 * overhead:+.1f}% time per window (goal <= 10%)")
        ok = "same" if loss_diff < 1e-5 else "DIFFERENT"
        print(
            f"loss after step {args.steps}: lightning {lit_loss[0]:.6f}, bare {bare_loss[0]:.6f} "
            f"(max |diff| over repeats {loss_diff:.2e}: {ok} computation)"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
