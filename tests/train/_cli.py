"""``python _cli.py train ...``: the toonlab CLI with the tiny test model registered (for subprocess tests that
signal or kill a training process)."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import _tiny  # noqa: E402,F401  (registers "_tiny_train" in this process)

from toonlab.cli import main  # noqa: E402

torch.set_num_threads(1)
main()
