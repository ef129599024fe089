"""Run under torchrun by test_ddp.py: train the tiny model from CONFIG, then save this rank's weights to
OUT/rank<R>.safetensors. NAN_RANK=R NAN_CALLS=i,j makes those G-step calls' losses NaN on rank R alone."""

import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
import _tiny  # noqa: E402,F401  (registers "_tiny_train" in this process)

from toonlab.train import distributed as D  # noqa: E402
from toonlab.train.config import load_run_config  # noqa: E402
from toonlab.train.trainer import Trainer  # noqa: E402

torch.set_num_threads(1)
config, out = sys.argv[1], Path(sys.argv[2])
trainer = Trainer(load_run_config(config))
if os.environ.get("NAN_RANK") == str(trainer.dist.rank):
    trainer.model.cfg.nan_calls = [int(i) for i in os.environ["NAN_CALLS"].split(",")]
trainer.fit()
with D.unwrapped(trainer.model.networks):
    weights = {f"{n}.{k}": v.detach().clone() for n, net in trainer.model.networks.items()
               for k, v in net.state_dict().items()}
save_file(weights, str(out / f"rank{trainer.dist.rank}.safetensors"))
D.teardown()
