"""Skill-prior learning end to end: training, resuming, checkpoints, validation, the CLI, DDP,
Weights & Biases, evaluation (docs/algorithm.md section 1; pourlit.skills.module, pourlit.lightning_cli).

Everything runs on tiny synthetic rollouts (tests/skill_fixtures.py): 8 episodes of 30-60 steps
with the pouring env's sizes (50-D states, 7-D actions), horizon 5, batch 16, 64 windows per epoch
(4 steps per epoch), hidden 32, latent 4, one block per MLP.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from skill_fixtures import (
    ACTION_DIM,
    BATCH,
    HIDDEN,
    HORIZON,
    LATENT,
    MAX_EPISODE_STEPS,
    STATE_DIM,
    STEPS_PER_EPOCH,
    WINDOWS,
    KillAtStep,
    KilledForTest,
    cli_config,
    data_kwargs,
    env_config_dict,
    model_kwargs,
    step_checkpoint_config,
    write_config,
    write_dataset,
)

from pourlit.cli import main
from pourlit.data import RolloutDataModule, read_episode
from pourlit.data.loader import ResumableDataLoader
from pourlit.skills import SkillPrior, SkillPriorModule, load_skill_prior

VAL_COLUMNS = ("val/recon_mse", "val/kl", "val/prior_nll", "val/loss")
EVAL_KEYS = (
    "success_rate",
    "mean_poured_fraction",
    "mean_spilled_fraction",
    "mean_return",
    "episode_length",
    "env_steps_per_s",
)


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True, scope="module")
def _isolated_globals():
    """One torch thread (the machine is shared; faster and less noisy), wandb offline, and the
    global state that seed_everything / LightningCLI touch restored afterwards."""
    names = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS", "WANDB_MODE", "WANDB_SILENT")
    saved_env = {k: os.environ.get(k) for k in names}
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    argv = sys.argv
    sys.argv = ["pourlit"]  # LightningCLI warns when pytest's own arguments are on sys.argv
    torch.set_num_threads(1)
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    yield
    sys.argv = argv
    torch.set_num_threads(threads)
    torch.set_rng_state(rng)
    for k, v in saved_env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def fit(
    data_dir: Path,
    max_epochs: int,
    *,
    ckpt_dir: Path | None = None,
    ckpt_path: Path | str | None = None,
    checkpoint_every: int | None = None,
    logger=False,
    callbacks=(),
    model: dict | None = None,
    data: dict | None = None,
    **trainer_kw,
):
    """Seeded single-process CPU fit through the Python API; returns (trainer, module, dm).
    With ``ckpt_dir``: ModelCheckpoint(save_last=True), every ``checkpoint_every`` training steps
    if given (else at every epoch end)."""
    L.seed_everything(0, verbose=False)
    dm = RolloutDataModule(str(data_dir), **data_kwargs(**(data or {})))
    module = SkillPriorModule(
        state_dim=dm.state_dim,
        action_dim=dm.action_dim,
        env_config=dm.env_config,
        **model_kwargs(**(model or {})),
    )
    cbs = list(callbacks)
    if ckpt_dir is not None:
        cbs.append(
            ModelCheckpoint(dirpath=ckpt_dir, save_last=True, every_n_train_steps=checkpoint_every)
        )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        logger=logger,
        callbacks=cbs,
        enable_checkpointing=ckpt_dir is not None,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_kw,
    )
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return trainer, module, dm


def read_metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def val_rows(rows: list[dict[str, str]]) -> list[dict[str, float]]:
    """The validation rows of a CSVLogger metrics file, as floats, in order."""
    return [
        {k: float(r[k]) for k in (*VAL_COLUMNS, "epoch", "step")}
        for r in rows
        if r.get("val/recon_mse")
    ]


def load_ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def grad_norm(module: torch.nn.Module) -> float:
    grads = [p.grad.detach().double() for p in module.parameters() if p.grad is not None]
    return float(torch.sqrt(sum((g**2).sum() for g in grads)))


@torch.no_grad()
def network_outputs(
    module: SkillPriorModule, states: torch.Tensor, z: torch.Tensor, batch: dict
) -> dict[str, torch.Tensor]:
    """Deterministic outputs of the prior, decoder and encoder (no z sampling)."""
    h = module.hparams.horizon
    prior = module.prior_dist(states)
    q = module.encoder(
        batch["actions"][:, :h], module.normalize(batch["states"])[:, :h], batch["pad_mask"][:, :h]
    )
    return {
        "prior_mu": prior.mu,
        "prior_log_sigma": prior.log_sigma,
        "decode": module.decode(states, z),
        "q_mu": q.mu,
        "q_log_sigma": q.log_sigma,
    }


def fixed_inputs(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    states = torch.rand(n, STATE_DIM, generator=g) * 2 - 1
    z = torch.randn(n, LATENT, generator=g)
    return states, z


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("rollouts"))


@pytest.fixture(scope="module")
def trained(data_dir: Path, tmp_path_factory) -> SimpleNamespace:
    """Two epochs through the Python API with a CSVLogger and ModelCheckpoint(save_last)."""
    root = tmp_path_factory.mktemp("trained")
    trainer, module, dm = fit(
        data_dir, 2, ckpt_dir=root / "checkpoints", logger=CSVLogger(root, name="logs")
    )
    return SimpleNamespace(
        trainer=trainer,
        module=module,
        dm=dm,
        ckpt=root / "checkpoints" / "last.ckpt",
        metrics=Path(trainer.logger.log_dir) / "metrics.csv",
    )


@pytest.fixture(scope="module")
def cli_run(data_dir: Path, tmp_path_factory) -> SimpleNamespace:
    """`pourlit fit -c CFG` (one epoch) with configs/skills/spirl_cl.yaml made small."""
    root = tmp_path_factory.mktemp("cli_run")
    run = root / "run"
    cfg = write_config(root / "spirl_cl_small.yaml", cli_config(data_dir, run))
    assert main(["fit", "-c", str(cfg)]) == 0
    return SimpleNamespace(cfg=cfg, run=run, ckpt=run / "checkpoints" / "last.ckpt")


# ----------------------------------------------------------------------------- 1. resuming


def test_resume_matches_uninterrupted_training(data_dir: Path, tmp_path: Path) -> None:
    """2 epochs in one go == 1 epoch, checkpoint, 2nd epoch in a fresh process state: every
    parameter and BatchNorm buffer, the step counter and the RAdam state are bit-identical.
    The early clipping window (6 steps) straddles the resume point (step 4)."""
    model = {"clip_grad_steps": 6, "clip_grad_norm": 1e-2}
    full_trainer, full, _ = fit(data_dir, 2, model=model)

    fit(data_dir, 1, ckpt_dir=tmp_path / "ck", model=model)
    last = tmp_path / "ck" / "last.ckpt"
    saved = load_ckpt(last)
    assert (saved["global_step"], saved["epoch"]) == (STEPS_PER_EPOCH, 0)

    res_trainer, resumed, _ = fit(data_dir, 2, ckpt_path=last, model=model)

    assert full_trainer.global_step == res_trainer.global_step == 2 * STEPS_PER_EPOCH
    opt_a, opt_b = full_trainer.optimizers[0], res_trainer.optimizers[0]
    assert isinstance(opt_a, torch.optim.RAdam) and isinstance(opt_b, torch.optim.RAdam)
    assert_same_training_state(full_trainer, full, res_trainer, resumed)
    # not vacuous: the second epoch changed the weights and the BatchNorm statistics
    a = full.state_dict()
    changed = [k for k in a if not torch.equal(a[k], saved["state_dict"][k])]
    assert any("running_mean" in k for k in changed) and any("weight" in k for k in changed)
    sa = opt_a.state_dict()
    assert all(float(st["step"]) == 2 * STEPS_PER_EPOCH for st in sa["state"].values())


def test_cli_resume_with_ckpt_path_last(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """`pourlit fit ... --ckpt_path last` finds last.ckpt in the ModelCheckpoint dirpath of the
    config and continues from its global step instead of starting again."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    cfg = write_config(tmp_path / "cfg.yaml", cli_config(data_dir, run))
    assert main(["fit", "-c", str(cfg), "--trainer.max_epochs", "1"]) == 0
    last = run / "checkpoints" / "last.ckpt"
    saved = load_ckpt(last)
    assert (saved["global_step"], saved["epoch"]) == (STEPS_PER_EPOCH, 0)

    assert main(["fit", "-c", str(cfg), "--trainer.max_epochs", "2", "--ckpt_path", "last"]) == 0
    rows = read_metrics(run / "logs" / "version_1" / "metrics.csv")
    train_steps = sorted({int(r["step"]) for r in rows if r["train/loss"]})
    assert train_steps == list(range(STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH))
    assert {int(r["epoch"]) for r in rows} == {1}
    assert len(val_rows(rows)) == 1


def test_last_ckpt_holds_the_latest_epoch_with_the_repo_config(
    data_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    cfg = cli_config(data_dir, run, trainer={"max_epochs": 2})
    cfg["model"]["class_path"] = "skill_fixtures.WorseningValModule"  # val gets worse at epoch 1
    assert main(["fit", "-c", str(write_config(tmp_path / "cfg.yaml", cfg))]) == 0
    assert load_ckpt(run / "checkpoints" / "last.ckpt")["global_step"] == 2 * STEPS_PER_EPOCH


# ----------------------------------------------------------------------------- 1b. mid-epoch


MID_EPOCH_MODEL = {"clip_grad_steps": 6, "clip_grad_norm": 1e-2}


class BatchRecorder(Callback):
    """The states of every training batch, by the global step it was trained at."""

    def __init__(self) -> None:
        self.states: dict[int, torch.Tensor] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.states[trainer.global_step] = batch["states"].clone()


def assert_same_optimizer_state(sa: dict, sb: dict) -> None:
    """Two optimizer state dicts hold the same groups and bit-identical per-parameter state."""
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys() and len(sa["state"]) > 0
    for idx, state in sa["state"].items():
        assert state.keys() == sb["state"][idx].keys()
        for name, value in state.items():
            other = sb["state"][idx][name]
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(other)), (idx, name)


def assert_same_training_state(
    trainer_a: L.Trainer, module_a: SkillPriorModule, trainer_b: L.Trainer, module_b
) -> None:
    """Step, epoch, every parameter and buffer, and the RAdam state are bit-identical."""
    assert trainer_a.global_step == trainer_b.global_step
    assert trainer_a.current_epoch == trainer_b.current_epoch
    a, b = module_a.state_dict(), module_b.state_dict()
    assert a.keys() == b.keys()
    assert any(k.endswith("running_var") for k in a) and "state_mean" in a
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa, sb = trainer_a.optimizers[0].state_dict(), trainer_b.optimizers[0].state_dict()
    assert_same_optimizer_state(sa, sb)


@pytest.fixture(scope="module")
def uninterrupted(data_dir: Path) -> SimpleNamespace:
    """Two epochs in one go, recording every training batch."""
    rec = BatchRecorder()
    trainer, module, _ = fit(data_dir, 2, callbacks=[rec], model=MID_EPOCH_MODEL)
    assert sorted(rec.states) == list(range(2 * STEPS_PER_EPOCH))
    return SimpleNamespace(trainer=trainer, module=module, batches=rec.states)


@pytest.mark.parametrize(
    ("kill", "saved", "num_workers"),
    [(7, 6, 0), (4, 3, 0), (7, 6, 2)],
    ids=["epoch1-workers0", "epoch0-workers0", "epoch1-workers2"],
)
def test_resume_mid_epoch_matches_uninterrupted_training(
    data_dir: Path,
    tmp_path: Path,
    uninterrupted: SimpleNamespace,
    monkeypatch,
    recwarn,
    kill: int,
    saved: int,
    num_workers: int,
) -> None:
    """ModelCheckpoint(every_n_train_steps=3, save_last=True); the run dies right after step
    ``kill``, before that step's checkpoint, so last.ckpt holds step ``saved``, mid-epoch (4 steps
    per epoch): step 6 is epoch 1 after 2 of its batches, step 3 is epoch 0 after 3 batches (the
    resumed run then also crosses an epoch end with validation). A fresh Trainer, model and data
    module resumed from it train the batches the uninterrupted run trained at the same steps,
    and end bit-identical to it; Lightning hands the loader its saved position."""
    data = {"num_workers": num_workers}
    with pytest.raises(KilledForTest):
        fit(
            data_dir,
            2,
            ckpt_dir=tmp_path / "ck",
            checkpoint_every=3,
            callbacks=[KillAtStep(kill)],
            model=MID_EPOCH_MODEL,
            data=data,
        )
    last = tmp_path / "ck" / "last.ckpt"
    saved_ckpt = load_ckpt(last)
    epoch, delivered = divmod(saved, STEPS_PER_EPOCH)
    assert 0 < delivered < STEPS_PER_EPOCH  # really mid-epoch
    assert (saved_ckpt["global_step"], saved_ckpt["epoch"]) == (saved, epoch)
    position = {"epoch": epoch, "batches_delivered": delivered}
    assert saved_ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [position]

    loaded: list[dict] = []
    load = ResumableDataLoader.load_state_dict
    monkeypatch.setattr(
        ResumableDataLoader,
        "load_state_dict",
        lambda loader, state: loaded.append(dict(state)) or load(loader, state),
    )
    rec = BatchRecorder()
    res_trainer, resumed, _ = fit(
        data_dir, 2, ckpt_path=last, callbacks=[rec], model=MID_EPOCH_MODEL, data=data
    )
    assert loaded == [position]  # Lightning restored the loader's position
    assert not [w for w in recwarn if "not resumable" in str(w.message)]
    assert sorted(rec.states) == list(range(saved, 2 * STEPS_PER_EPOCH))
    for step, states in rec.states.items():
        assert torch.equal(states, uninterrupted.batches[step]), step
    assert res_trainer.global_step == 2 * STEPS_PER_EPOCH
    assert_same_training_state(uninterrupted.trainer, uninterrupted.module, res_trainer, resumed)
    # not vacuous: training after the checkpoint changed the weights
    after = resumed.state_dict()
    assert any(not torch.equal(after[k], v) for k, v in saved_ckpt["state_dict"].items())


def test_cli_resume_mid_epoch_with_ckpt_path_last(
    data_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    """The repo config with its step-checkpoint callback every 3 steps: `pourlit fit -c CFG
    --ckpt_path last` after a kill at step 7 continues at step 6 and ends bit-identical to an
    uninterrupted run; last.ckpt stays one file, rewritten at steps 3 and 6 and at epoch ends."""
    monkeypatch.chdir(tmp_path)

    def config(run: Path, kill: int | None = None) -> Path:
        cfg = cli_config(data_dir, run, trainer={"max_epochs": 2})
        cfg = step_checkpoint_config(cfg, 3, kill)
        return write_config(tmp_path / f"{run.name}-{kill}.yaml", cfg)

    full, run = tmp_path / "full", tmp_path / "run"
    assert main(["fit", "-c", str(config(full))]) == 0
    with pytest.raises(KilledForTest):
        main(["fit", "-c", str(config(run, kill=7))])
    assert [p.name for p in (run / "checkpoints").glob("last*")] == ["last.ckpt"]
    assert load_ckpt(run / "checkpoints" / "last.ckpt")["global_step"] == 6

    assert main(["fit", "-c", str(config(run)), "--ckpt_path", "last"]) == 0
    rows = read_metrics(run / "logs" / "version_1" / "metrics.csv")
    assert sorted({int(r["step"]) for r in rows if r["train/loss"]}) == [6, 7]
    assert len(val_rows(rows)) == 1

    a, b = (load_ckpt(r / "checkpoints" / "last.ckpt") for r in (full, run))
    for ckpt in (a, b):  # written at the end of epoch 1 (step 8 is no multiple of 3)
        assert (ckpt["global_step"], ckpt["epoch"]) == (2 * STEPS_PER_EPOCH, 1)
        loader_state = ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"]
        assert loader_state == [{"epoch": 1, "batches_delivered": STEPS_PER_EPOCH}]
    for r in (full, run):
        assert [p.name for p in (r / "checkpoints").glob("last*")] == ["last.ckpt"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    (opt_a,), (opt_b,) = a["optimizer_states"], b["optimizer_states"]
    assert_same_optimizer_state(opt_a, opt_b)


@pytest.mark.parametrize("name", ["spirl_cl", "spirl_ol", "prior_refit"])
def test_repo_configs_checkpoint_last_mid_epoch_and_at_epoch_end(name: str) -> None:
    """Both skill configs: two unmonitored ModelCheckpoints write the same last.ckpt, one at
    every epoch end (save_last) and one every 50 training steps (its only file is named last;
    no save_last, so it never rewrites last.ckpt at train end), with no version counter."""
    path = Path(__file__).resolve().parents[1] / f"configs/skills/{name}.yaml"
    callbacks = yaml.safe_load(path.read_text())["trainer"]["callbacks"]
    ckpts = [cb["init_args"] for cb in callbacks if cb["class_path"].endswith("ModelCheckpoint")]
    assert len(ckpts) == 3
    epoch_cb, step_cb, best_cb = ckpts  # the first is trainer.checkpoint_callback
    # a prior refit keeps the decoder frozen: its best epoch is by the prior's NLL
    assert best_cb["monitor"] == ("val/prior_nll" if name == "prior_refit" else "val/recon_mse")
    assert len({c["dirpath"] for c in ckpts}) == 1 and name in epoch_cb["dirpath"]
    assert epoch_cb["save_last"] is True and "monitor" not in epoch_cb
    assert not {"every_n_train_steps", "every_n_epochs", "filename"} & epoch_cb.keys()
    assert step_cb["every_n_train_steps"] == 50 and step_cb["filename"] == "last"
    assert step_cb["save_top_k"] == 1 and not {"save_last", "monitor"} & step_cb.keys()
    for c in (epoch_cb, step_cb):
        assert c["enable_version_counter"] is False
        ModelCheckpoint(**c)  # Lightning accepts the combination


# ----------------------------------------------------------------------------- 2. checkpoints


def test_checkpoint_rebuilds_identical_networks(trained: SimpleNamespace) -> None:
    loaded = SkillPriorModule.load_from_checkpoint(trained.ckpt, map_location="cpu")
    hp = loaded.hparams
    assert (hp.state_dim, hp.action_dim, hp.horizon) == (STATE_DIM, ACTION_DIM, HORIZON)
    assert (hp.latent_dim, hp.hidden, hp.prior_blocks, hp.decoder_blocks) == (LATENT, HIDDEN, 1, 1)
    live = trained.module.eval()
    loaded.eval()
    for (name, x), (name2, y) in zip(
        live.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert name == name2 and torch.equal(x, y), name
    states, z = fixed_inputs()
    batch = next(iter(trained.dm.val_dataloader()))
    got, want = network_outputs(loaded, states, z, batch), network_outputs(live, states, z, batch)
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k
    assert want["decode"].shape == (12, ACTION_DIM)


def test_checkpoint_carries_normalisation_and_env_config(
    trained: SimpleNamespace, data_dir: Path
) -> None:
    ckpt = load_ckpt(trained.ckpt)
    sd = ckpt["state_dict"]
    mean, std = trained.dm.state_mean, trained.dm.state_std
    assert torch.equal(sd["state_mean"], mean) and torch.equal(sd["state_std"], std)
    # the statistics of the training episodes' steps, not the identity
    rows = torch.cat([torch.from_numpy(read_episode(p).states) for p in trained.dm.train_files])
    torch.testing.assert_close(mean, rows.double().mean(0).float(), rtol=0, atol=1e-5)
    torch.testing.assert_close(std, rows.double().std(0, correction=0).float(), rtol=1e-4, atol=0)
    assert not torch.allclose(std, torch.ones_like(std))
    hp = ckpt["hyper_parameters"]
    assert hp["state_mean"] == pytest.approx(mean.tolist())
    assert hp["state_std"] == pytest.approx(std.tolist())
    files_env = read_episode(sorted(data_dir.glob("rollout_*.h5"))[0]).attrs["env_config"]
    assert files_env == json.loads(json.dumps(env_config_dict()))
    assert hp["env_config"] == files_env
    assert hp["env_config"]["max_episode_steps"] == MAX_EPISODE_STEPS


class DecoderInputRecorder(Callback):
    """Pairs each training batch (raw, from the data module) with the states the decoder got."""

    def __init__(self) -> None:
        self.batches: list[torch.Tensor] = []
        self.decoder_states: list[torch.Tensor] = []

    def on_fit_start(self, trainer, pl_module) -> None:
        def hook(_module, args):
            if pl_module.training:
                self.decoder_states.append(args[0].detach().clone())

        pl_module.decoder.register_forward_pre_hook(hook)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append(batch["states"].clone())


def test_training_normalises_states_exactly_once(data_dir: Path) -> None:
    """Batches carry raw file states; the model standardises them once with the statistics it
    saves in the checkpoint, the same transform SkillPrior applies to raw env states."""
    rec = DecoderInputRecorder()
    _, module, dm = fit(data_dir, 1, callbacks=[rec], limit_val_batches=0, num_sanity_val_steps=0)
    assert len(rec.batches) == len(rec.decoder_states) == STEPS_PER_EPOCH
    raw_rows = {
        tuple(row) for p in dm.train_files for row in read_episode(p).states.round(5).tolist()
    }
    mean, std = dm.state_mean, dm.state_std
    assert torch.equal(module.state_mean, mean) and torch.equal(module.state_std, std)
    seen = []
    for states, dec_in in zip(rec.batches, rec.decoder_states, strict=True):
        for row in states.reshape(-1, STATE_DIM).numpy().round(5).tolist():
            assert tuple(row) in raw_rows  # raw values straight from the files
        want = (states[:, :HORIZON] - mean) / std
        torch.testing.assert_close(dec_in, want, rtol=0, atol=1e-6)
        seen.append(dec_in.reshape(-1, STATE_DIM))
    seen = torch.cat(seen)
    # standardised once: unit scale (twice would blow it up by 1/std, about 3-10x here)
    assert 0.5 < seen.std(0).median() < 1.5, seen.std(0)


def test_load_skill_prior_is_frozen_and_has_the_right_shapes(trained: SimpleNamespace) -> None:
    prior = load_skill_prior(trained.ckpt)
    assert isinstance(prior, SkillPrior)
    params = list(prior.parameters())
    assert params and not any(p.requires_grad for p in params)
    assert not any(m.training for m in prior.modules())
    prior.train()
    assert not any(m.training for m in prior.modules())
    assert (prior.state_dim, prior.action_dim) == (STATE_DIM, ACTION_DIM)
    assert (prior.horizon, prior.latent_dim) == (HORIZON, LATENT)
    assert prior.env_config["max_episode_steps"] == MAX_EPISODE_STEPS

    states, z = fixed_inputs()
    q = prior.prior_dist(states)
    actions = prior.decode(states, z)
    assert q.mu.shape == q.log_sigma.shape == (12, LATENT)
    assert actions.shape == (12, ACTION_DIM)
    assert not actions.requires_grad
    # eval-mode BatchNorm: a row does not depend on the rest of the batch
    torch.testing.assert_close(prior.decode(states[:1], z[:1]), actions[:1])
    torch.testing.assert_close(prior.prior_dist(states[:1]).mu, q.mu[:1])
    # the same numbers as the training module in eval mode (raw states, normalised inside)
    module = SkillPriorModule.load_from_checkpoint(trained.ckpt, map_location="cpu").eval()
    with torch.no_grad():
        assert torch.equal(module.decode(states, z), actions)
        assert torch.equal(module.prior_dist(states).mu, q.mu)


def test_exported_checkpoint_is_smaller_and_loads_the_same(
    trained: SimpleNamespace, tmp_path: Path
) -> None:
    from pourlit.checkpoints import export_checkpoint

    out = tmp_path / "small" / "skill.ckpt"
    assert main(["export", str(trained.ckpt), str(out)]) == 0
    full, small = load_ckpt(trained.ckpt), load_ckpt(out)
    assert "optimizer_states" in full and "optimizer_states" not in small
    assert "loops" not in small and small["global_step"] == full["global_step"]
    assert full["pourlit_kind"] == small["pourlit_kind"] == "skill"  # the kind travels along
    assert out.stat().st_size < 0.6 * trained.ckpt.stat().st_size
    states, z = fixed_inputs()
    a, b = load_skill_prior(trained.ckpt), load_skill_prior(out)
    assert torch.equal(a.decode(states, z), b.decode(states, z))
    assert torch.equal(a.prior_dist(states).mu, b.prior_dist(states).mu)
    with pytest.raises(ValueError, match="not a Lightning checkpoint"):
        torch.save({"weights": torch.zeros(2)}, tmp_path / "w.pt")
        export_checkpoint(tmp_path / "w.pt", tmp_path / "x.ckpt")


def test_load_skill_prior_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "skills.ckpt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        load_skill_prior(path)


def test_load_skill_prior_non_lightning_torch_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_skill_prior(path)


@pytest.mark.parametrize(
    "content",
    [b"garbage, not a checkpoint\n", b"this is not a checkpoint\n", b""],
    ids=["unpickling", "index", "empty"],
)
def test_load_skill_prior_garbage_file_names_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "skills.ckpt"
    path.write_bytes(content)
    try:
        load_skill_prior(path)
    except Exception as e:  # noqa: BLE001 - the point is which exception comes out
        err: Exception | None = e
    else:
        err = None
    assert isinstance(err, ValueError), f"{type(err).__name__}: {err}"
    assert str(path) in str(err)


# ----------------------------------------------------------------------------- 3. validation


def test_validation_metrics_are_logged_per_epoch(trained: SimpleNamespace) -> None:
    rows = read_metrics(trained.metrics)
    assert set(VAL_COLUMNS) <= set(rows[0].keys())
    val = val_rows(rows)
    assert [int(r["epoch"]) for r in val] == [0, 1]
    beta = trained.module.hparams.beta
    for r in val:
        assert all(math.isfinite(r[k]) for k in VAL_COLUMNS)
        assert r["val/recon_mse"] > 0 and r["val/kl"] >= 0
        # no padded steps here, so the mean unit-variance NLL is exactly half the mean MSE:
        # val/loss = rec + beta * kl + prior = 0.5 * mse + beta * kl + prior
        expected = 0.5 * r["val/recon_mse"] + beta * r["val/kl"] + r["val/prior_nll"]
        assert r["val/loss"] == pytest.approx(expected, rel=1e-5)


def test_cli_validate_reports_metrics(cli_run: SimpleNamespace, capsys) -> None:
    logs = cli_run.run / "logs"
    before = set(logs.iterdir())
    rc = main(["validate", "-c", str(cli_run.cfg), "--ckpt_path", str(cli_run.ckpt)])
    assert rc == 0
    assert "val/recon_mse" in capsys.readouterr().out
    (new,) = set(logs.iterdir()) - before
    (row,) = val_rows(read_metrics(new / "metrics.csv"))
    assert all(math.isfinite(row[k]) for k in VAL_COLUMNS)


# ----------------------------------------------------------------------------- 4. learning


def test_validation_reconstruction_improves(data_dir: Path, tmp_path: Path) -> None:
    trainer, _, _ = fit(
        data_dir,
        4,
        logger=CSVLogger(tmp_path, name="logs"),
        model={"lr": 3e-3},
        data={"windows_per_epoch": 256},
    )
    val = val_rows(read_metrics(Path(trainer.logger.log_dir) / "metrics.csv"))
    assert len(val) == 4
    first, last = val[0]["val/recon_mse"], val[-1]["val/recon_mse"]
    assert last < 0.75 * first, [r["val/recon_mse"] for r in val]


# ----------------------------------------------------------------------------- 5. clipping


class GradNormRecorder(Callback):
    """Total gradient norm before clipping (on_before_optimizer_step, which Lightning 2.x calls
    before configure_gradient_clipping) and after the optimizer step (on_train_batch_end; the
    gradients the step used are still there, zero_grad runs inside the next step's closure)."""

    def __init__(self) -> None:
        self.before: list[float] = []
        self.after: list[float] = []
        self.steps: list[int] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.steps.append(trainer.global_step)
        self.before.append(grad_norm(pl_module))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after.append(grad_norm(pl_module))


@pytest.mark.parametrize(
    "trainer_clip",
    [
        None,
        0.05,
    ],
)
def test_gradient_norm_is_clipped_for_the_first_steps_only(
    data_dir: Path, trainer_clip: float | None
) -> None:
    """clip_grad_steps=3, clip_grad_norm=1e-3: steps 0-2 are clipped to norm 1e-3; later steps
    are left alone, or clipped by the Trainer's gradient_clip_val if one is given."""
    rec = GradNormRecorder()
    fit(
        data_dir,
        2,
        callbacks=[rec],
        model={"clip_grad_steps": 3, "clip_grad_norm": 1e-3},
        limit_val_batches=0,
        num_sanity_val_steps=0,
        gradient_clip_val=trainer_clip,
    )
    n = 2 * STEPS_PER_EPOCH
    assert rec.steps == list(range(n)) and len(rec.after) == n
    for i in range(n):
        assert rec.before[i] > 0.05, rec.before  # raw gradients are far above both thresholds
        if i < 3:
            assert rec.after[i] <= 1e-3 * (1 + 1e-6)
            assert rec.after[i] == pytest.approx(1e-3, rel=1e-3)
        elif trainer_clip is None:
            assert rec.after[i] == rec.before[i]
        else:
            assert rec.after[i] == pytest.approx(trainer_clip, rel=1e-3)


# ----------------------------------------------------------------------------- 6. DDP


@pytest.mark.slow
def test_ddp_fit_via_module_entry_point(data_dir: Path, tmp_path: Path) -> None:
    """`python -m pourlit.cli fit` on 2 CPU processes: every rank takes its share of the epoch,
    so each runs ceil(ceil(windows / 2) / batch) steps, half the single-process count."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    run = tmp_path / "run"
    cfg = write_config(tmp_path / "cfg.yaml", cli_config(data_dir, run))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PL_")}
    env.update(WANDB_MODE="offline", MUJOCO_GL="egl", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "pourlit.cli", "fit", "-c", str(cfg)]
    cmd += ["--trainer.strategy", "ddp", "--trainer.devices", "2"]
    cmd += ["--trainer.accelerator", "cpu", "--trainer.max_epochs", "1"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file()
    world = 2
    per_rank_steps = math.ceil(math.ceil(WINDOWS / world) / BATCH)
    assert per_rank_steps == STEPS_PER_EPOCH // 2
    ckpt = load_ckpt(last)
    assert (ckpt["global_step"], ckpt["epoch"]) == (per_rank_steps, 0)
    assert "state_mean" in ckpt["state_dict"]


@pytest.mark.slow
def test_ddp_resume_mid_epoch_matches_uninterrupted_training(
    data_dir: Path, tmp_path: Path
) -> None:
    """2 CPU processes, 6 steps per rank and epoch, the repo config's step checkpoints every 2
    steps: killed after step 5, resumed from last.ckpt (step 4, rank 0's loader position, which
    every rank loads and applies to its own share) to the end of epoch 1, the weights and the
    RAdam state equal an uninterrupted DDP run's."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PL_")}
    tests_dir = str(Path(__file__).resolve().parent)  # for skill_fixtures.KillAtStep
    pythonpath = [tests_dir, *filter(None, [env.get("PYTHONPATH")])]
    env.update(WANDB_MODE="offline", OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(pythonpath))
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]

    def pourlit_fit(run: Path, kill: int | None = None, *extra: str) -> int:
        cfg = cli_config(data_dir, run, data={"windows_per_epoch": 192}, trainer={"max_epochs": 2})
        cfg = step_checkpoint_config(cfg, 2, kill)
        path = write_config(tmp_path / f"{run.name}-{kill}.yaml", cfg)
        cmd = [sys.executable, "-m", "pourlit.cli", "fit", "-c", str(path), *ddp, *extra]
        proc = subprocess.run(
            cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400
        )
        if kill is None:
            assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.returncode

    full, run = tmp_path / "full", tmp_path / "run"
    pourlit_fit(full)
    assert pourlit_fit(run, kill=5) != 0
    saved = load_ckpt(run / "checkpoints" / "last.ckpt")
    assert (saved["global_step"], saved["epoch"]) == (4, 0)  # 192 / 2 ranks / 16: 6 per epoch
    position = [{"epoch": 0, "batches_delivered": 4}]
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"] == position
    pourlit_fit(run, None, "--ckpt_path", "last")
    a, b = (load_ckpt(r / "checkpoints" / "last.ckpt") for r in (full, run))
    assert a["global_step"] == b["global_step"] == 12
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    (opt_a,), (opt_b,) = a["optimizer_states"], b["optimizer_states"]
    assert_same_optimizer_state(opt_a, opt_b)


# ----------------------------------------------------------------------------- 7. wandb


def test_wandb_offline_run(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    try:
        import wandb
    except Exception as e:  # noqa: BLE001 - any import failure means no wandb here
        pytest.skip(f"wandb cannot be imported: {e!r}")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.chdir(tmp_path)
    logger = {
        "class_path": "lightning.pytorch.loggers.WandbLogger",
        "init_args": {"offline": True, "save_dir": str(tmp_path), "project": "pourlit-test"},
    }
    cfg = cli_config(data_dir, tmp_path / "run", trainer={"logger": [logger]})
    try:
        assert main(["fit", "-c", str(write_config(tmp_path / "cfg.yaml", cfg))]) == 0
    finally:
        wandb.finish()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    assert any(p.is_file() for p in (run_dir / "files").iterdir())
    (record,) = run_dir.glob("run-*.wandb")
    data = record.read_bytes()
    # the run log holds the validation metrics and the model's hyperparameters
    assert b"val/recon_mse" in data and b"train/loss" in data
    assert b"latent_dim" in data and b"pourlit-test" in data


# ----------------------------------------------------------------------------- 8. bad inputs


def test_cli_fit_empty_data_dir_names_the_folder(
    cli_run: SimpleNamespace, tmp_path: Path, capsys
) -> None:
    empty = tmp_path / "empty_rollouts"
    empty.mkdir()
    assert main(["fit", "-c", str(cli_run.cfg), "--data.init_args.data_dir", str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"pourlit: error: {empty}: no rollout files")


def test_cli_unknown_model_option_is_rejected(cli_run: SimpleNamespace, capsys) -> None:
    assert main(["fit", "-c", str(cli_run.cfg), "--model.init_args.bogus", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("pourlit: error:") and "Option 'bogus' is not accepted" in err


def test_evaluate_rejects_a_checkpoint_for_other_state_sizes(tmp_path: Path, capsys) -> None:
    data = write_dataset(tmp_path / "small", episodes=3, state_dim=10, with_env=False)
    fit(data, 1, ckpt_dir=tmp_path / "ck", limit_val_batches=0, num_sanity_val_steps=0)
    ckpt = tmp_path / "ck" / "last.ckpt"
    assert load_skill_prior(ckpt).state_dim == 10
    capsys.readouterr()
    rc = main(["evaluate", "--ckpt", str(ckpt), "--episodes", "1", "--num-envs", "1", "-q"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "state/action sizes" in err
    assert "10/7" in err and f"{STATE_DIM}/{ACTION_DIM}" in err
    assert str(ckpt) in err


# ----------------------------------------------------------------------------- 9. evaluate


def test_evaluate_skill_checkpoint(cli_run: SimpleNamespace, tmp_path: Path, capsys) -> None:
    out = tmp_path / "eval.json"
    args = ["evaluate", "--ckpt", str(cli_run.ckpt), "--episodes", "2", "--num-envs", "2"]
    capsys.readouterr()
    assert main([*args, "-q", "--json", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert json.loads(out.read_text()) == printed
    for key in EVAL_KEYS:
        assert math.isfinite(printed[key]), key
    assert printed["episodes"] == 2
    assert printed["policy"] == "skill_prior"
    assert 0.0 <= printed["success_rate"] <= 1.0
    assert 0.0 <= printed["mean_poured_fraction"] <= 1.0
    assert 0.0 <= printed["mean_spilled_fraction"] <= 1.0
    assert 1 <= printed["episode_length"] <= MAX_EPISODE_STEPS
    assert printed["env_steps_per_s"] > 0


def test_skipped_bad_files_are_counted_in_the_logs(data_dir: Path, tmp_path: Path) -> None:
    mixed = tmp_path / "mixed"
    shutil.copytree(data_dir, mixed)
    (mixed / "rollout_99999.h5").write_bytes(b"not an hdf5 file")
    with pytest.warns(UserWarning, match="rollout_99999"):
        trainer, _, dm = fit(
            mixed, 1, logger=CSVLogger(tmp_path, name="logs"), data={"skip_bad_files": True}
        )
    assert dm.num_skipped == 1
    rows = read_metrics(Path(trainer.logger.log_dir) / "metrics.csv")
    logged = [float(r["data/skipped_files"]) for r in rows if r.get("data/skipped_files")]
    assert logged == [1.0]


def test_lightning_hook_name_bypasses_module_setattr_only_for_itself() -> None:
    """SkillPriorModule sets Lightning's per-hook ``_current_fx_name`` directly (no parameter /
    buffer / submodule lookup); every other attribute still goes through nn.Module."""
    m = SkillPriorModule(state_dim=5, action_dim=2, horizon=4, latent_dim=3, hidden=8)
    m._current_fx_name = "training_step"
    assert m._current_fx_name == "training_step" and "_current_fx_name" in m.__dict__
    m.extra = torch.nn.Linear(2, 2)
    assert "extra" in m._modules and "extra" not in m.__dict__
    m.scale = torch.nn.Parameter(torch.ones(1))
    assert "scale" in m._parameters


def test_prior_refit_reads_each_windows_posterior_from_one_encoding(tmp_path: Path) -> None:
    """``train: prior`` encodes every training window once (``encode_all``, in fixed chunks)
    and looks the posteriors up by window id: the same q, and with the same random state the
    same prior loss and gradient, as encoding each batch."""
    data = write_dataset(tmp_path / "d", episodes=5, seed=3)
    dm = RolloutDataModule(
        str(data), horizon=HORIZON, batch_size=BATCH, windows_per_epoch=WINDOWS, val_fraction=0.0
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    batch = next(iter(loader))
    torch.manual_seed(0)
    m = SkillPriorModule(
        STATE_DIM, ACTION_DIM, horizon=HORIZON, hidden=16, init_ckpt="unused", train="prior"
    )
    cache = m.encode_all(loader.dataset, chunk=7)  # chunks smaller than the data: several
    assert cache.shape == (loader.dataset.total_windows, 2 * m.hparams.latent_dim)
    with torch.no_grad():
        q = m._encode(batch)["q"]
    torch.testing.assert_close(cache[batch["window"]], torch.cat([q.mu, q.log_sigma], -1))
    losses = []
    for posteriors in (None, cache):
        m._posteriors = posteriors
        m.zero_grad()
        torch.manual_seed(1)
        loss = m._prior_losses(batch)["loss"]
        loss.backward()
        losses.append((loss.detach(), m.prior[0].weight.grad.clone()))
    torch.testing.assert_close(losses[0][0], losses[1][0])
    torch.testing.assert_close(losses[0][1], losses[1][1])
    m.hparams.horizon = HORIZON + 1
    with pytest.raises(ValueError, match="horizon"):
        m.encode_all(loader.dataset)


def test_prior_refit_changes_only_the_prior(cli_run: SimpleNamespace, tmp_path: Path) -> None:
    """``train: prior`` with ``init_ckpt``: a trained skill model's prior network refit on
    other demonstrations; encoder, decoder (BatchNorm statistics included) and the state
    normalisation stay bit for bit those of the checkpoint (the new data's statistics differ),
    the prior moves."""
    other = write_dataset(tmp_path / "more", episodes=6, seed=5)
    run = tmp_path / "refit"
    # the README's command: the small spirl_cl config, then the shipped overlay on top
    overlay = Path(__file__).resolve().parents[1] / "configs/skills/prior_refit.yaml"
    small = {"batch_size": BATCH, "windows_per_epoch": WINDOWS}
    cfg = write_config(tmp_path / "base.yaml", cli_config(other, run, data=small))
    flags = ["--model.init_args.init_ckpt", str(cli_run.ckpt), "--trainer.max_epochs", "1"]
    flags += [f"--data.init_args.{k}={v}" for k, v in small.items()]
    assert main(["fit", "-c", str(cfg), "-c", str(overlay), *flags, "--run_dir", str(run)]) == 0
    (best,) = (run / "checkpoints").glob("best-*.ckpt")  # monitored on val/prior_nll
    assert "val/prior_nll" in str(
        torch.load(best, map_location="cpu", weights_only=False)["callbacks"]
    )
    old = torch.load(cli_run.ckpt, map_location="cpu", weights_only=False)["state_dict"]
    new = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    new = new["state_dict"]
    assert old.keys() == new.keys()
    for k in old:
        if k.startswith("prior."):
            continue
        assert torch.equal(old[k], new[k]), k
    moved = [k for k in old if k.startswith("prior.") and not torch.equal(old[k], new[k])]
    assert "prior.0.weight" in moved
    with pytest.raises(ValueError, match="give init_ckpt"):
        SkillPriorModule(STATE_DIM, ACTION_DIM, train="prior")
    with pytest.raises(ValueError, match="train must be 'all' or 'prior'"):
        SkillPriorModule(STATE_DIM, ACTION_DIM, train="decoder")
    with pytest.raises(ValueError, match=r"not a skill checkpoint of these sizes"):
        SkillPriorModule(STATE_DIM, ACTION_DIM, init_ckpt=str(cli_run.ckpt), hidden=16).setup("fit")
    with pytest.raises(FileNotFoundError, match="skill checkpoint not found"):
        SkillPriorModule(STATE_DIM, ACTION_DIM, init_ckpt=str(tmp_path / "gone.ckpt")).setup("fit")
    # the refit checkpoint loads without its init checkpoint
    moved_init = tmp_path / "init_moved.ckpt"
    cli_run.ckpt.rename(moved_init)
    try:
        SkillPriorModule.load_from_checkpoint(run / "checkpoints/last.ckpt", map_location="cpu")
    finally:
        moved_init.rename(cli_run.ckpt)


def test_shipped_skill_checkpoint_is_the_refit_prior() -> None:
    """checkpoints/skills/spirl_cl.ckpt (make checkpoints): a weights-only skill checkpoint whose
    prior was refit (train: prior), with its evaluation on 100
    held-out episodes beside it."""
    from pourlit.checkpoints import checkpoint_kind

    path = Path(__file__).resolve().parents[1] / "checkpoints/skills/spirl_cl.ckpt"
    assert checkpoint_kind(path) == "skill"
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    assert ckpt["hyper_parameters"]["train"] == "prior"
    prior = load_skill_prior(path)
    assert (prior.horizon, prior.latent_dim) == (10, 10)
    evaluation = json.loads(path.with_suffix(".eval.json").read_text())
    assert evaluation["seed"] == 10_000 and evaluation["episodes"] == 100
    assert evaluation["policy"] == "skill_prior"
