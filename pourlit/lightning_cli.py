"""``pourlit fit|validate|test``: LightningCLI over pourlit's LightningModules and data modules.

The model and data classes come from the config's ``class_path`` (subclass mode). The data
module's state/action sizes and environment config are linked into the model, so a config
never repeats them: ``data.state_dim -> model.init_args.state_dim`` and so on.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI


class PourlitCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for name in ("state_dim", "action_dim", "env_config"):
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")
        parser.link_arguments("data.init_args.horizon", "model.init_args.horizon")


def _limit_torch_threads() -> None:
    """pourlit's networks are small (128-wide MLPs/LSTMs, batches of 64-512): intra-op threads
    gain little, and when another process holds a core their spin-waits make every step up to
    100x slower (measured: 28 ms vs 2.6 s per skill step on 2 busy cores). Default to one
    thread; ``POURLIT_TORCH_THREADS=N`` overrides."""
    import os

    import torch

    torch.set_num_threads(max(1, int(os.environ.get("POURLIT_TORCH_THREADS", "1"))))


def run(args: list[str] | None) -> None:
    """Run LightningCLI with ``args`` (e.g. ``["fit", "-c", "configs/skills/spirl_cl.yaml"]``;
    None reads ``sys.argv``)."""
    _limit_torch_threads()
    PourlitCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        save_config_kwargs={"overwrite": True},
    )
