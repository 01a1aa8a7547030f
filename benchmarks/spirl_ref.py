"""The public SPiRL reference's closed-loop training step (clvrai/spirl ``ClSPiRLMdl``), for
``bench_skills.py --spirl-ref PATH`` only: never imported by ``pourlit``, not a dependency.

PATH is a checkout of https://github.com/clvrai/spirl or a bare git directory of it; its
``spirl`` package is imported from the checkout, or extracted with ``git archive`` into a
temporary directory. Two of its imports serve only visualisation and data loading and are
absent here: ``cv2`` and ``funcsigs``; if they cannot be imported, empty stand-ins are put in
``sys.modules`` (``funcsigs.signature`` is ``inspect.signature``). The step is the reference
trainer's (spirl/train.py): ``model(inputs)``, ``model.loss``, ``losses.total.value.backward()``,
its own RAdam (spirl.utils.pytorch_utils) with lr 1e-3, betas (0.9, 0.999); no clipping.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import torch


def _import_spirl(path: str, tmp: str) -> tuple[Any, Any, Any]:
    """(ClSPiRLMdl, AttrDict, RAdam) of the reference at ``path``."""
    p = Path(path)
    if (p / "spirl" / "__init__.py").is_file():
        root = str(p)
    else:  # a bare git directory (what the mirror holds)
        root = str(Path(tmp) / "spirl_ref")
        Path(root).mkdir()
        archive = subprocess.run(
            ["git", "--git-dir", str(p), "archive", "HEAD", "spirl"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", root], input=archive, check=True)
    for name in ("cv2", "funcsigs"):
        try:
            importlib.import_module(name)
        except ImportError:
            stub = types.ModuleType(name)
            stub.signature = inspect.signature  # type: ignore[attr-defined]
            sys.modules[name] = stub
    sys.path.insert(0, root)
    try:
        mdl = importlib.import_module("spirl.models.closed_loop_spirl_mdl")
        utils = importlib.import_module("spirl.utils.general_utils")
        torch_utils = importlib.import_module("spirl.utils.pytorch_utils")
    finally:
        sys.path.remove(root)
    return mdl.ClSPiRLMdl, utils.AttrDict, torch_utils.RAdam


class SpirlStepRunner:
    """ClSPiRLMdl at pourlit's sizes (``hidden`` for every hidden width, ``prior_blocks`` hidden
    layers in its MLPs, BatchNorm as in its default config) training on the same batches."""

    def __init__(
        self, path: str, batches: list, args: argparse.Namespace, kw: dict[str, Any], tmp: str
    ) -> None:
        cls, attrdict, radam = _import_spirl(path, tmp)
        d_s, d_a = batches[0]["states"].shape[-1], batches[0]["actions"].shape[-1]
        hp = attrdict(
            state_dim=d_s,
            action_dim=d_a,
            n_rollout_steps=args.horizon,
            kl_div_weight=kw["beta"],
            nz_vae=kw["latent_dim"],
            nz_enc=kw["hidden"],
            nz_mid=kw["hidden"],
            nz_mid_lstm=kw["hidden"],
            nz_mid_prior=kw["hidden"],
            n_processing_layers=kw["decoder_blocks"],
            num_prior_net_layers=kw["prior_blocks"],
            cond_decode=True,
            device="cpu",
            batch_size=args.batch_size,
        )
        torch.manual_seed(args.seed)
        self.model = cls(hp)
        self.model.train()
        self.opt = radam(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=kw["lr"],
            betas=(0.9, 0.999),
        )
        self.inputs = [
            attrdict(states=b["states"], actions=b["actions"][:, : args.horizon]) for b in batches
        ]
        self.i = 0

    def step(self) -> None:
        inputs = attrdict_copy(self.inputs[self.i % len(self.inputs)])
        self.i += 1
        self.opt.zero_grad()
        output = self.model(inputs)
        losses = self.model.loss(output, inputs)
        losses.total.value.backward()
        self.opt.step()


def attrdict_copy(d: Any) -> Any:
    """A shallow copy (the model writes ``inputs.observations`` into its inputs)."""
    return type(d)(d)
