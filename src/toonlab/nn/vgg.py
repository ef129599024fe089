"""VGG19 feature extractor for content / style losses: conv1_1 … conv4_4 (pre-ReLU) of torchvision's VGG19.

The layers are exactly ``torchvision.models.vgg19().features[:26]`` (keys ``features.0.weight`` …
``features.25.bias``), so the standard ImageNet file ``vgg19-dcbb9e9d.pth`` loads unchanged (its keys beyond
index 25 and its classifier are ignored). torchvision itself is never imported (it does not work here).

Weights: ``"imagenet"`` looks for the variant's file in ``$TORCH_HOME/hub/checkpoints/`` (TORCH_HOME defaults
to ``~/.cache/torch``) and downloads it there when online — torchvision's ``vgg19-dcbb9e9d.pth``, or for the Caffe
variant ``vgg19-d01eb7cb.pth`` (the Caffe VGG19 converted to torchvision's layout by J. Johnson, pytorch-vgg); a path
loads that file; ``"random"`` is a seeded initialisation for offline experiments (with a warning: content losses on
random features are not the paper's). Files are always read with ``torch.load(weights_only=True)`` (never unpickles
arbitrary objects). Models reach this network through ``toonlab.nn.perceptual``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from toonlab.errors import MissingWeightsError, ToonlabError
from toonlab.nn.weight_files import read_state_dict

VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_URL = f"https://download.pytorch.org/models/{VGG19_FILE}"
VGG19_CAFFE_FILE = "vgg19-d01eb7cb.pth"
VGG19_CAFFE_URL = f"https://web.eecs.umich.edu/~justincj/models/{VGG19_CAFFE_FILE}"
# torchvision's VGG19 ("E") configuration up to conv4_4; "M" = 2×2 max-pool. Index 25 is conv4_4.
_LAYERS_TO_CONV4_4 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512)
LAST_INDEX = 25
# ImageNet statistics of torchvision's weights (RGB, [0, 1]) and the Caffe model's BGR pixel means (0–255).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)

Variant = Literal["torchvision", "caffe"]


def _build_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = 3
    for v in _LAYERS_TO_CONV4_4:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
            cin = v
    return nn.Sequential(*layers[: LAST_INDEX + 1])  # drop the ReLU after conv4_4: features are pre-activation


def hub_checkpoint_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (torch.hub's folder for downloaded weights)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def imagenet_file(variant: Variant = "torchvision") -> tuple[Path, str]:
    """(where the variant's ImageNet file is looked for, its download URL)."""
    name, url = (VGG19_FILE, VGG19_URL) if variant == "torchvision" else (VGG19_CAFFE_FILE, VGG19_CAFFE_URL)
    return hub_checkpoint_dir() / name, url


def _imagenet_state(variant: Variant, download: bool) -> tuple[dict[str, torch.Tensor], Path]:
    path, url = imagenet_file(variant)
    if path.is_file():
        return read_state_dict(path, "VGG19"), path
    hint = f"put {path.name} (from {url}) into {path.parent}"
    if not download:
        raise MissingWeightsError(f"VGG19 weights {path.name} not found in {path.parent}; {hint}")
    try:
        state = torch.hub.load_state_dict_from_url(url, model_dir=str(path.parent), map_location="cpu",
                                                   progress=False, weights_only=True)
    except Exception as e:  # offline: URLError / socket errors; keep one line
        raise MissingWeightsError(f"VGG19 weights {path.name} not found in {path.parent} and the download failed "
                                  f"({type(e).__name__}); {hint}") from None
    return state, path


class VGG19Features(nn.Module):
    """Frozen VGG19 up to conv4_4 (pre-ReLU): ``(B,3,H,W)`` in [-1, 1] → ``(B,512,H/8,W/8)``.

    ``variant="torchvision"``: RGB in [0, 1] normalised by ImageNet mean/std (for ``vgg19-dcbb9e9d.pth``).
    ``variant="caffe"``: BGR in [0, 255] minus the Caffe pixel means, no std (for Caffe-converted VGG19 weights,
    the CTSS / AnimeGAN authors' choice). ``download=False`` never touches the network. ``scale`` multiplies the
    output (1 for real weights: the papers' λ assume their magnitude; see ``toonlab.nn.perceptual``).
    """

    def __init__(self, weights: str = "imagenet", variant: Variant = "torchvision", download: bool = True,
                 scale: float = 1.0):
        super().__init__()
        if variant not in ("torchvision", "caffe"):
            raise ToonlabError(f"unknown VGG19 variant {variant!r} (torchvision | caffe)")
        self.variant = variant
        self.scale_out = float(scale)
        # built lazily inside a training step: its throw-away default init must not draw from the global RNG,
        # or a resumed run's random stream would shift (exact resume, toonlab.train)
        with torch.random.fork_rng(devices=[]):
            self.features = _build_features()
        if variant == "torchvision":
            mean, scale = torch.tensor(IMAGENET_MEAN), 1.0 / torch.tensor(IMAGENET_STD)
        else:
            mean, scale = torch.tensor(CAFFE_BGR_MEAN), torch.ones(3)
        # not persistent: the state dict holds exactly torchvision's feature keys
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)
        self._load(weights, download)
        self.requires_grad_(False)
        self.eval()

    def _load(self, weights: str, download: bool) -> None:
        if weights == "random":
            warnings.warn("VGG19 with random weights: content/style losses will not match the papers "
                          "(offline experiments only)", stacklevel=3)
            gen = torch.Generator().manual_seed(0)
            for m in self.features:
                if isinstance(m, nn.Conv2d):
                    fan_out = m.out_channels * 9  # torchvision's kaiming_normal_(mode="fan_out")
                    m.weight.data = torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_out) ** 0.5
                    m.bias.data.zero_()
            return
        if weights == "imagenet":
            state, source = _imagenet_state(self.variant, download)
        else:
            source = Path(os.path.expanduser(weights))
            if not source.is_file():
                raise MissingWeightsError(f"VGG19 weights file not found: {source}")
            state = read_state_dict(source, "VGG19")
        self.load_torchvision_state(state, source)

    def load_torchvision_state(self, state: dict[str, torch.Tensor], source: str | Path = "<state>") -> None:
        """Load ``features.N.*`` (N ≤ 25) from a torchvision-layout VGG19 state dict; other keys are ignored."""
        wanted = self.features.state_dict()
        picked = {}
        for key in wanted:
            full = f"features.{key}"
            if full not in state:
                raise ToonlabError(f"{source}: not a torchvision VGG19 state dict (missing {full})")
            if state[full].shape != wanted[key].shape:
                raise ToonlabError(f"{source}: {full} has shape {tuple(state[full].shape)}, "
                                   f"expected {tuple(wanted[key].shape)}")
            picked[key] = state[full]
        self.features.load_state_dict(picked)

    def train(self, mode: bool = True) -> VGG19Features:
        return super().train(False)  # always eval: a frozen feature extractor

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] RGB → the network's input space (see class docstring)."""
        x = (x + 1.0) * 0.5
        if self.variant == "caffe":
            x = x.flip(1) * 255.0
        return (x - self.mean.to(x.dtype)) * self.scale.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"VGG19Features expects (B,3,H,W), got {tuple(x.shape)}")
        out = self.features(self.normalize(x))
        return out * self.scale_out if self.scale_out != 1.0 else out
