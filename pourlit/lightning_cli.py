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


def run(args: list[str]) -> None:
    """Run LightningCLI with ``args`` (e.g. ``["fit", "-c", "configs/skills/spirl_cl.yaml"]``)."""
    PourlitCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        save_config_kwargs={"overwrite": True},
    )
