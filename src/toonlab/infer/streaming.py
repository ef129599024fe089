"""Layer-streamed inference: the whole image through the network, one materialised map at a time, each computed in
horizontal row stripes — exact image-wide normalisation statistics at the FLOPs of one untiled pass.

The generator is traced (``torch.fx``) once. A node is *materialised* — stored whole, in ``storage`` dtype (fp16 by
default), computed stripe by stripe in float32 — when it is a convolution, the input of a normalisation layer (its
statistics need the full map), used more than once (skips, residuals), or the output. Everything else (activations,
normalisation with known statistics, adds, pads, nearest/bilinear resizing, channel concatenation) is evaluated
lazily per stripe inside the consumer's stripe, so e.g. CTSS's nearest-×2 upsampling of a 128-channel map is never
stored at full resolution. Each op maps an output row range to the input rows it needs (convolution: kernel,
stride, padding, dilation; pads: reflected/replicated/constant rows at the borders; resizing: PyTorch's source-index
formulas), so every stripe equals the same rows of the untiled result. Normalisation statistics (per sample and
group) are accumulated stripe by stripe from the float32 values (mean/M2 combined in float64), before rounding to
the storage dtype. A map is freed after its last consumer; a map's last reader (same shape, or any shape for one
image: a stride-1 conv, a residual add, CTSS's upsampling conv) writes its stripes into the same allocation, each
stripe written back once no later stripe reads the bytes under it. Measured (benchmarks/bench_streaming.py, CTSS,
1 thread): 1024² 0.89× the untiled time at 40 % of its peak RSS, 0.05/255 mean difference; 3840×2160 in 1.9 GB
peak RSS (untiled would need ~21 GB).

Networks with ops outside this set (global pooling such as CBAM's channel attention, style-conditioned norms,
untraceable control flow) raise :class:`NotStreamable` with the reason; the translator then tiles them.
"""

from __future__ import annotations

import inspect
import operator
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from toonlab.errors import ToonlabError
from toonlab.infer.tiling import GroupMoments

# Stripe height is chosen so one stripe's float32 temporaries (the inputs fetched through the lazy chain, pads,
# the output) stay near this size: large enough for efficient convolutions, small next to the stored maps.
STRIPE_BYTES = 64 << 20
# Maps and stripes are channels-last: oneDNN's convolutions on CPU ran 1.5–3× faster so on stripes (and the
# per-call overhead of a convolution is amortised only over stripes of some height: MIN_STRIPE_ROWS).
_CL = torch.channels_last
MIN_STRIPE_ROWS = 16


class NotStreamable(ToonlabError):
    """The network (or this call) cannot be streamed; ``str(e)`` is the one-line reason."""


def _norm_module_types() -> tuple[type, ...]:
    from toonlab.models.cartoongan import ScaleShiftInstanceNorm

    return nn.GroupNorm, nn.InstanceNorm2d, ScaleShiftInstanceNorm


_LEAVES = (nn.Conv2d, nn.ConvTranspose2d, nn.Upsample)


class _Tracer(fx.Tracer):
    """Keeps convolutions, norms (incl. toonlab's LayerNorm2d and CartoonGAN's instance norm) and resizing as
    single nodes; everything else is traced through."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _LEAVES + _norm_module_types()) or super().is_leaf_module(m, qualname)


_POINTWISE_FUNCS = {operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, torch.add, torch.sub,
                    torch.mul, torch.div, torch.neg, torch.tanh, torch.sigmoid, torch.relu, torch.clamp, F.relu,
                    F.leaky_relu, F.gelu, F.silu, F.elu, F.relu6, F.hardtanh}
_POINTWISE_METHODS = {"add", "sub", "mul", "div", "neg", "tanh", "sigmoid", "relu", "clamp", "clamp_min",
                      "clamp_max", "contiguous", "add_", "mul_", "relu_", "clamp_"}
_POINTWISE_MODULES = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.Identity, nn.ReLU6, nn.ELU, nn.GELU, nn.SiLU,
                      nn.Hardtanh, nn.PReLU, nn.BatchNorm2d)
_PAD_MODULES = {nn.ReflectionPad2d: "reflect", nn.ReplicationPad2d: "replicate", nn.ZeroPad2d: "constant",
                nn.ConstantPad2d: "constant"}
_INTERP_SIG = inspect.signature(F.interpolate)
_PAD_SIG = inspect.signature(F.pad)


@dataclass
class _Stats:
    """A norm layer's image-wide statistics, merged stripe by stripe (:class:`~toonlab.infer.tiling.GroupMoments`),
    then folded with its affine."""

    groups: int
    eps: float
    moments: GroupMoments = field(default_factory=GroupMoments)
    channels: int = 0
    mul_bc: torch.Tensor | None = field(default=None, repr=False)  # (B,C,1,1), once complete
    bias_bc: torch.Tensor | None = field(default=None, repr=False)

    def add(self, t: torch.Tensor) -> None:
        b, c, h, w = t.shape
        if not (t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last)):
            t = t.contiguous()
        # the stripe's moments from PyTorch's group-norm kernel: several times faster than var_mean on CPU
        # (its output is discarded); eps 0, so var = 1/rstd² exactly up to float32 rounding (inf → 0)
        _, mean, rstd = torch.native_group_norm(t, None, None, b, c, h * w, self.groups, 0.0)
        var = rstd.double().view(b, self.groups).pow(-2)
        self.moments.add(mean.view(b, self.groups), var, t.numel() / (b * self.groups))

    def finish(self, weight: torch.Tensor | None, bias: torch.Tensor | None) -> None:
        """Fold the statistics and the affine into (B,C,1,1) ``mul_bc``, ``bias_bc``: y = x·mul + bias."""
        mean, var = self.moments.mean_var()
        rstd = torch.rsqrt(var + self.eps)  # (B, G)
        b, g = rstd.shape
        c = weight.numel() if weight is not None else self.channels
        rstd, mean = rstd.repeat_interleave(c // g, 1), mean.repeat_interleave(c // g, 1)  # (B, C)
        mul = rstd * (weight.double()[None] if weight is not None else 1.0)
        add = (bias.double()[None] if bias is not None else 0.0) - mean * mul
        self.mul_bc, self.bias_bc = mul.float()[:, :, None, None], add.float()[:, :, None, None]


@dataclass
class _Info:
    """What the analysis knows of a node for one input shape."""

    spatial: bool = False  # a (B,C,H,W) tensor that depends on the image
    shape: tuple[int, ...] = ()
    value: Any = None  # the value of a non-spatial node (constants, sizes, weights)
    materialised: bool = False
    norm: tuple[int, float, Any, Any] | None = None  # (groups, eps, weight, bias) of an image-wide norm node


def _bind(sig: inspect.Signature, args, kwargs) -> dict:
    b = sig.bind(*args, **kwargs)
    b.apply_defaults()
    return dict(b.arguments)


class StreamedNetwork:
    """``module`` (a (B,3,H,W) → (B,C,H',W') network taking one tensor, e.g. the translator's GeneratorWrapper
    with ``style=None``) as a layer-streamed executor. ``storage``: dtype of materialised maps (fp16 halves the
    memory; fp32 for bit-level checks); ``stripe_rows``: fixed stripe height (default: from ``stripe_bytes``).
    Raises :class:`NotStreamable` when the network cannot be traced or has an unsupported op."""

    def __init__(self, module: nn.Module, storage: torch.dtype = torch.float16, stripe_rows: int | None = None,
                 stripe_bytes: int = STRIPE_BYTES):
        self.module, self.storage = module, storage
        self.stripe_rows, self.stripe_bytes = stripe_rows, stripe_bytes
        concrete = {"style": None} if "style" in inspect.signature(module.forward).parameters else None
        if getattr(module, "multi_style", False):
            raise NotStreamable("multi-style generators (style-conditioned norms) are not streamed")
        try:
            self.graph = _Tracer().trace(module, concrete_args=concrete)
        except Exception as e:  # fx raises many kinds on data-dependent control flow
            raise NotStreamable(f"the network cannot be traced ({type(e).__name__}: {str(e)[:80]})") from None
        self.nodes = list(self.graph.nodes)
        self.image = next(n for n in self.nodes if n.op == "placeholder")
        self._gm: fx.GraphModule | None = None
        self._plans: dict[tuple, tuple[dict, _Plan]] = {}
        self._device = next(iter(module.parameters()), torch.empty(0)).device
        self._check_ops()

    # --- analysis ----------------------------------------------------------------------------------------------
    def _mod(self, node: fx.Node) -> nn.Module:
        return self.module.get_submodule(node.target)

    def _check_ops(self) -> None:
        """Raise NotStreamable for the first op that depends on the image and is not supported."""
        dep = {self.image}
        for n in self.nodes:
            if n is self.image or n.op in ("output", "placeholder", "get_attr"):
                continue
            if not any(a in dep for a in n.all_input_nodes):
                continue
            dep.add(n)
            if n.op == "call_module":
                m = self._mod(n)
                if isinstance(m, nn.Conv2d):
                    if isinstance(m.padding, str) or m.padding_mode == "circular":
                        raise NotStreamable(f"{n.target}: conv padding {m.padding!r}/{m.padding_mode}")
                elif isinstance(m, nn.ConvTranspose2d):
                    if m.dilation != (1, 1):
                        raise NotStreamable(f"{n.target}: dilated transposed conv")
                elif not isinstance(m, _norm_module_types() + _POINTWISE_MODULES + tuple(_PAD_MODULES)
                                    + (nn.Upsample,)):
                    raise NotStreamable(f"{n.target}: {type(m).__name__} is not a streamable layer")
            elif n.op == "call_function":
                if n.target not in _POINTWISE_FUNCS | {F.interpolate, F.pad, torch.cat, torch.flip, getattr,
                                                       operator.getitem}:
                    raise NotStreamable(f"{getattr(n.target, '__name__', n.target)} is not a streamable op "
                                        "(e.g. a global pooling)")
            elif n.op == "call_method" and n.target not in _POINTWISE_METHODS | {"flip", "size"}:
                raise NotStreamable(f".{n.target}() is not a streamable op")

    def _analyse(self, shape: tuple[int, int, int, int]) -> dict[fx.Node, _Info]:
        """Shapes of every node for an input of ``shape`` (a fake-tensor run), which nodes are spatial, which
        are materialised, and the norms' parameters."""
        from torch._subclasses.fake_tensor import FakeTensorMode

        vals: dict[fx.Node, Any] = {}
        with FakeTensorMode(allow_non_fake_inputs=True):
            x = torch.empty(shape, device=self._device)

            class _Rec(fx.Interpreter):
                def run_node(self, n):
                    out = super().run_node(n)
                    vals[n] = out
                    return out

            try:
                _Rec(self.graph_module()).run(x)
            except Exception as e:
                raise NotStreamable(f"shape analysis failed ({type(e).__name__}: {str(e)[:80]})") from None
        gm = self.graph_module()
        info: dict[fx.Node, _Info] = {}
        dep = {self.image}
        for n in self.nodes:
            i = info[n] = _Info()
            if n.op == "output":
                continue
            v = vals.get(n)
            if n is not self.image and any(a in dep for a in n.all_input_nodes):
                dep.add(n)
            if n in dep and torch.is_tensor(v):
                if v.dim() != 4:
                    raise NotStreamable(f"{n.name}: a {v.dim()}-d tensor derived from the image")
                i.spatial, i.shape = True, tuple(v.shape)
            elif n in dep:
                i.value = v  # sizes and other plain values derived from the image's shape
            elif n.op == "get_attr":
                i.value = getattr(gm, n.target)
            # placeholders other than the image (style) are None; other constants are evaluated below
        for n in self.nodes:  # constant subgraphs (nothing image-derived): evaluate for real, once
            if n.op in ("call_function", "call_method", "call_module") and not info[n].spatial and n not in dep:
                info[n].value = self._eval_const(n, info)
        for n in self.nodes:
            if not info[n].spatial or n.op not in ("call_function", "call_method"):
                continue
            for a in n.all_input_nodes:  # constant tensor operands must broadcast over rows
                v = info[a].value
                if not info[a].spatial and torch.is_tensor(v) and v.dim() >= 2 and v.shape[-2] != 1:
                    raise NotStreamable(f"{n.name}: a constant operand with rows {tuple(v.shape)}")
            if n.target is operator.getitem:
                raise NotStreamable(f"{n.name}: indexing an image-shaped tensor")
            if n.target in (torch.cat,) and _cat_dim(n, info) not in (1, -3):
                raise NotStreamable(f"{n.name}: concatenation along a spatial dimension")
            if n.target in ("flip", torch.flip) and any(d % 4 == 2 for d in _flip_dims(n, info)):
                raise NotStreamable(f"{n.name}: a vertical flip")
        for n in self.nodes:
            if n.op == "call_module" and info[n].spatial and isinstance(self._mod(n), _norm_module_types()):
                info[n].norm = self._norm_params(self._mod(n), info[n].shape[1])
                if n.args[0] is self.image and info[n].norm is not None:
                    raise NotStreamable(f"{n.name}: a norm applied to the input image directly")
        # what is stored whole
        out = next(n for n in self.nodes if n.op == "output")
        for n in self.nodes:
            i = info[n]
            if not i.spatial:
                continue
            users = [u for u in n.users if u.op != "output"]
            uses = sum(_count_uses(u, n) for u in users)
            i.materialised = (n is self.image or self._is_conv(n) or uses > 1
                              or any(info[u].norm is not None for u in users) or n in out.all_input_nodes)
        if not isinstance(out.args[0], fx.Node) or not info[out.args[0]].spatial:
            raise NotStreamable("the network's output is not one image-shaped tensor")
        return info

    def graph_module(self) -> fx.GraphModule:
        if self._gm is None:
            self._gm = fx.GraphModule(self.module, self.graph)
        return self._gm

    def _eval_const(self, n: fx.Node, info: dict) -> Any:
        args = fx.node.map_arg(n.args, lambda a: info[a].value)
        kwargs = fx.node.map_arg(n.kwargs, lambda a: info[a].value)
        if n.op == "call_function":
            return n.target(*args, **kwargs)
        if n.op == "call_method":
            return getattr(args[0], n.target)(*args[1:], **kwargs)
        return self._mod(n)(*args, **kwargs)

    def _is_conv(self, n: fx.Node) -> bool:
        return n.op == "call_module" and isinstance(self._mod(n), (nn.Conv2d, nn.ConvTranspose2d))

    @staticmethod
    def _norm_params(m: nn.Module, channels: int) -> tuple[int, float, Any, Any] | None:
        """(groups, eps, weight, bias) of an image-wide norm; None for one that is per-channel affine at
        inference (InstanceNorm2d with running statistics: evaluated as a pointwise op)."""
        if isinstance(m, nn.GroupNorm):
            return m.num_groups, m.eps, m.weight, m.bias
        if isinstance(m, nn.InstanceNorm2d):
            if m.track_running_stats:
                return None
            return channels, m.eps, m.weight, m.bias
        return channels, m.eps, m.scale, m.shift  # ScaleShiftInstanceNorm

    # --- row ranges and per-stripe evaluation ------------------------------------------------------------------
    # ``_rows(n, a, b)`` is node n's value at output rows [a, b) as float32, or — in a dry run (self._dry set) —
    # None, recording the rows each materialised node is read at and the float32 bytes of the temporaries.

    def _rows(self, n: fx.Node, a: int, b: int) -> torch.Tensor | None:
        i = self._info[n]
        if i.materialised and n in self._done:
            if self._dry is not None:
                lo, hi = self._dry["need"].get(n, (a, b))
                self._dry["need"][n] = (min(lo, a), max(hi, b))
                self._dry["bytes"] += _nbytes(i.shape, b - a)
                return None
            return self._buf[n][:, :, a:b].to(torch.float32, copy=True)
        out = self._compute(n, a, b)
        if self._dry is not None:
            self._dry["bytes"] += _nbytes(i.shape, b - a)
        return out

    def _fetch(self, n: fx.Node, lo: int, hi: int, mode: str, value: float, wpad: tuple[int, int]):
        """Rows [lo, hi) of n extended beyond [0, H) by padding ``mode`` (reflect | replicate | constant), and
        padded by ``wpad`` (left, right) columns the same way."""
        h = self._info[n].shape[2]
        left, right = wpad
        if mode == "constant":
            clo, chi = min(max(lo, 0), h), max(min(hi, h), 0)
            if clo >= chi:
                if self._dry is not None:
                    return None
                b, c, _, w = self._info[n].shape
                return torch.full((b, c, hi - lo, w + left + right), float(value), device=self._device)
            t = self._rows(n, clo, chi)
            if t is None:
                return None
            return F.pad(t, (left, right, clo - lo, hi - chi), value=float(value))
        # reflect/replicate: fetch the in-range rows plus (reflect) the rows the border rows mirror, pad rows and
        # columns in one F.pad, and cut [lo, hi) out of it
        top, bottom = max(0, -lo), max(0, hi - h)
        clo, chi = max(lo, 0), min(hi, h)
        if mode == "reflect":
            chi, clo = max(chi, min(h, top + 1)), min(clo, max(0, h - 1 - bottom))
        clo, chi = min(clo, h - 1), max(chi, min(clo, h - 1) + 1)  # rows entirely beyond one border
        t = self._rows(n, clo, chi)
        if t is None:
            return None
        if top or bottom or left or right:
            t = F.pad(t, (left, right, top, bottom), mode=mode)
        first = clo - top  # the global row t starts at
        return t[:, :, lo - first:hi - first] if (lo - first, hi - first) != (0, t.shape[2]) else t

    def _arg(self, a, lo: int, hi: int):
        if isinstance(a, fx.Node):
            return self._rows(a, lo, hi) if self._info[a].spatial else self._info[a].value
        if isinstance(a, (list, tuple)):
            return type(a)(self._arg(x, lo, hi) for x in a)
        return a

    def _compute(self, n: fx.Node, a: int, b: int) -> torch.Tensor | None:
        dry = self._dry is not None
        if n.op == "call_module":
            m = self._mod(n)
            if isinstance(m, nn.Conv2d):
                return self._conv(n, m, a, b)
            if isinstance(m, nn.ConvTranspose2d):
                return self._conv_transpose(n, m, a, b)
            if isinstance(m, tuple(_PAD_MODULES)):
                left, right, top, bottom = m.padding
                return self._pad(n.args[0], a, b, (left, right, top, bottom), _PAD_MODULES[type(m)],
                                 getattr(m, "value", 0.0))
            if isinstance(m, nn.Upsample):
                return self._interp(n, n.args[0], a, b, m.size, m.scale_factor, m.mode, m.align_corners,
                                    m.recompute_scale_factor)
            norm = self._info[n].norm
            if norm is not None:
                t = self._rows(n.args[0], a, b)
                return None if dry else self._normalise(t, self._stats[n], norm)
            t = self._rows(n.args[0], a, b)
            return None if dry else m(t)
        if n.target is F.interpolate:
            p = _bind(_INTERP_SIG, n.args, n.kwargs)
            if p["antialias"]:
                raise NotStreamable(f"{n.name}: antialiased resizing")
            size = self._info[p["size"]].value if isinstance(p["size"], fx.Node) else p["size"]
            return self._interp(n, p["input"], a, b, size, p["scale_factor"], p["mode"], p["align_corners"],
                                p["recompute_scale_factor"])
        if n.target is F.pad:
            p = _bind(_PAD_SIG, n.args, n.kwargs)
            pad = tuple(self._info[x].value if isinstance(x, fx.Node) else x for x in p["pad"])
            if len(pad) not in (2, 4) or min(pad) < 0:
                raise NotStreamable(f"{n.name}: pad {pad}")
            return self._pad(p["input"], a, b, (pad + (0, 0))[:4], p["mode"], p["value"] or 0.0)
        args = self._arg(n.args, a, b)
        kwargs = {k: self._arg(v, a, b) for k, v in n.kwargs.items()}
        if dry:
            return None
        if n.op == "call_method":
            return getattr(args[0], n.target)(*args[1:], **kwargs)
        return n.target(*args, **kwargs)

    def _conv(self, n: fx.Node, m: nn.Conv2d, a: int, b: int):
        (kh, _), (sh, _), (ph, pw), (dh, _) = m.kernel_size, m.stride, m.padding, m.dilation
        mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
        t = self._fetch(n.args[0], a * sh - ph, (b - 1) * sh - ph + dh * (kh - 1) + 1, mode, 0.0, (pw, pw))
        if t is None:
            return self._weight(m)
        return F.conv2d(t.contiguous(memory_format=_CL), self._weight(m), None if m.bias is None else m.bias.float(),
                        m.stride, 0, m.dilation, m.groups)

    def _weight(self, m: nn.Module) -> torch.Tensor:
        """The conv's float32 weight in channels-last layout, cached while its map is computed (a copy: all of
        CartoonGAN's would be 44 MB)."""
        if self._dry is not None:
            self._dry["bytes"] += m.weight.numel() * 4
            return None
        w = self._weights.get(m)
        if w is None:
            w = self._weights[m] = m.weight.float().contiguous(memory_format=_CL)
        return w

    def _conv_transpose(self, n: fx.Node, m: nn.ConvTranspose2d, a: int, b: int):
        """Rows [a, b) of a transposed conv: output row o = i·s − p + k for input row i and kernel row k, so the
        input rows [⌈(a+p−K+1)/s⌉, ⌊(b−1+p)/s⌋] contribute; rows without any contribution hold the bias only."""
        (kh, _), (sh, _), (ph, pw), (_, opw) = m.kernel_size, m.stride, m.padding, m.output_padding
        hin = self._info[n.args[0]].shape[2]
        i0 = max(0, -((kh - 1 - a - ph) // sh))
        i1 = min(hin, (b - 1 + ph) // sh + 1)
        if i0 >= i1:  # only output_padding rows at the bottom, which no input row reaches
            if self._dry is not None:
                return None
            bs, c, _, w = self._info[n].shape
            y = torch.zeros(bs, c, b - a, w, device=self._device)
        else:
            t = self._rows(n.args[0], i0, i1)
            if t is None:
                return self._weight(m)
            y = F.conv_transpose2d(t.contiguous(memory_format=_CL), self._weight(m), None, m.stride, (0, pw),
                                   (0, opw), m.groups)
            j0 = a + ph - i0 * sh
            y = y[:, :, j0:j0 + b - a]
            if y.shape[2] < b - a:  # output_padding rows at the bottom: no input row reaches them
                y = F.pad(y, (0, 0, 0, b - a - y.shape[2]))
        return y if m.bias is None else y + m.bias.float()[None, :, None, None]

    def _pad(self, src: fx.Node, a: int, b: int, pad: tuple[int, int, int, int], mode: str, value: float):
        left, right, top, _ = pad
        return self._fetch(src, a - top, b - top, mode, value, (left, right))

    def _interp(self, n: fx.Node, src: fx.Node, a: int, b: int, size, scale, mode: str, align: bool | None,
                recompute: bool | None):
        """Rows [a, b) of a nearest/bilinear resize: the source rows by PyTorch's index formulas (scale 1/factor
        when a factor is given, in/out otherwise), interpolated between rows here, then resized along W alone."""
        if mode not in ("nearest", "bilinear"):
            raise NotStreamable(f"{n.name}: {mode} resizing")
        hin, hout, wout = self._info[src].shape[2], self._info[n].shape[2], self._info[n].shape[3]
        sf = None if scale is None else (tuple(scale) if isinstance(scale, (tuple, list)) else (scale, scale))
        by_factor = bool(sf) and not recompute
        f = sf[0] if by_factor else hout / hin
        if f == int(f) and int(f) & (int(f) - 1) == 0 and hout == hin * int(f) and not (mode == "bilinear" and align):
            # ×2^k: the source index (dst + ½)/f − ½ (bilinear) or ⌊dst/f⌋ (nearest) is exact in binary and shifts
            # with the stripe, so resizing the source rows (one halo row each side for bilinear, whose border
            # clamping then only touches rows cut off) gives the global rows
            f, halo = int(f), int(mode == "bilinear")
            lo, hi = max(0, a // f - halo), min(hin, (b - 1) // f + 1 + halo)
            t = self._rows(src, lo, hi)
            if t is None:
                return None
            up = F.interpolate(t, scale_factor=(float(f), sf[1] if by_factor else wout / t.shape[3]), mode=mode,
                               align_corners=False if mode == "bilinear" else None)
            return up[:, :, a - lo * f:b - lo * f]
        dst = torch.arange(a, b, dtype=torch.float32)
        if mode == "nearest":
            s = 1.0 / sf[0] if sf and not recompute else hin / hout
            i0 = torch.floor(dst * torch.tensor(s, dtype=torch.float32)).long().clamp(max=hin - 1)
            i1, lam = i0, None
        else:
            if align:
                s = (hin - 1) / (hout - 1) if hout > 1 else 0.0
                src_idx = dst * torch.tensor(s, dtype=torch.float32)
            else:
                s = 1.0 / sf[0] if sf and not recompute else hin / hout
                src_idx = ((dst + 0.5) * torch.tensor(s, dtype=torch.float32) - 0.5).clamp_min(0)
            i0 = src_idx.long()
            i1 = torch.where(i0 < hin - 1, i0 + 1, i0)
            lam = (src_idx - i0.float())[None, None, :, None]
        lo, hi = int(i0.min()), int(i1.max()) + 1
        t = self._rows(src, lo, hi)
        if t is None:
            return None
        rows = t.index_select(2, (i0 - lo).to(t.device))
        if lam is not None:
            rows = torch.lerp(rows, t.index_select(2, (i1 - lo).to(t.device)), lam.to(t.device))
        if sf and not recompute:
            return F.interpolate(rows, scale_factor=(1.0, sf[1]), mode=mode,
                                 align_corners=align if mode == "bilinear" else None)
        return F.interpolate(rows, size=(b - a, wout), mode=mode, align_corners=align if mode == "bilinear" else None)

    @staticmethod
    def _normalise(t: torch.Tensor, st: _Stats, norm) -> torch.Tensor:
        """(x − mean)·rstd·weight + bias folded into one per-(sample, channel) multiply-add."""
        b, c = t.shape[:2]
        return torch.addcmul(st.bias_bc.to(t.device), t, st.mul_bc.to(t.device))

    # --- materialisation ---------------------------------------------------------------------------------------
    def _prepare(self, shape: tuple[int, int, int, int]) -> "_Plan":
        """Analysis for one input shape: the materialised nodes in order, what each reads, when maps die, which
        maps a consumer may overwrite, and the stripe height of each. Kept for the last few shapes (the plan's
        estimate and the run that follows, a video's frames)."""
        if shape in self._plans:
            self._info, plan = self._plans[shape]
            return plan
        plan = self._schedule(shape)
        if len(self._plans) >= 4:
            self._plans.pop(next(iter(self._plans)))
        self._plans[shape] = (self._info, plan)
        return plan

    def _schedule(self, shape: tuple[int, int, int, int]) -> "_Plan":
        self._info = self._analyse(shape)
        order = [n for n in self.nodes if self._info[n].materialised and n is not self.image]
        out_node = next(n for n in self.nodes if n.op == "output").args[0]
        reads, rows_per = {}, {}
        self._done, self._dry = {self.image}, None
        for n in order:
            h = self._info[n].shape[2]
            probe = max(1, min(h, 8))
            mid = (h - probe) // 2
            self._dry = {"need": {}, "bytes": 0}
            self._rows(n, mid, mid + probe)
            reads[n] = set(self._dry["need"])
            per_row = self._dry["bytes"] / probe
            rows_per[n] = self.stripe_rows or min(h, max(MIN_STRIPE_ROWS, int(self.stripe_bytes // max(per_row, 1))))
            self._done.add(n)
        self._dry = None
        last = {}
        for k, n in enumerate(order):
            for r in reads[n]:
                last[r] = k
        # a map's last reader of the same shape — or any shape for one image — writes over it: the two share one
        # allocation, the reader's stripes going in behind the rows its later stripes still read. Along a chain
        # of such maps the last one sits at offset 0 and each producer is shifted up by how much bigger its
        # reader is (so a ×2 upsampling conv's output grows into its half-resolution input from below).
        alias: dict[fx.Node, fx.Node] = {}
        for k, n in enumerate(order):
            if n is out_node:
                continue
            for r in reads[n]:
                if (r is not self.image and r is not out_node and last.get(r) == k and r not in alias.values()
                        and (self._info[r].shape == self._info[n].shape or shape[0] == 1)):
                    alias[n] = r
                    break
        size = {n: _nbytes(self._info[n].shape, None, self._esize()) for n in order}
        place: dict[fx.Node, tuple[fx.Node, int]] = {}  # node → (its chain's last node, byte offset)
        arena: dict[fx.Node, int] = {}  # chain's last node → bytes of the shared allocation
        for n in reversed(order):
            if n not in alias or n in place:
                continue
            place[n], arena[n], reader = (n, 0), size[n], n
            while reader in alias:
                producer = alias[reader]
                off = -(-(place[reader][1] + max(0, size[reader] - size[producer])) // 64) * 64
                if off and off + size[producer] > arena[n]:
                    # the shift would make the allocation outgrow its largest map (every page it touches stays
                    # resident until it is freed): end the chain here; the producer gets its own
                    del alias[reader]
                    break
                place[producer], arena[n] = (n, off), max(arena[n], off + size[producer])
                reader = producer
        return _Plan(order, out_node, reads, rows_per, last, alias, place, arena, size)

    def _stripe_temp_bytes(self, n: fx.Node, rows: int) -> int:
        self._dry = {"need": {}, "bytes": 0}
        try:
            self._rows(n, 0, min(rows, self._info[n].shape[2]))
            return self._dry["bytes"]
        finally:
            self._dry = None

    def estimate(self, shape: tuple[int, int, int, int]) -> int:
        """Peak bytes this executor allocates for an input of ``shape`` (B,C,H,W): the largest set of live
        materialised maps (storage dtype; the output in float32; a shared allocation counted by the extent its
        maps have touched) plus one stripe's float32 temporaries and one conv's weight copy. The input itself is
        the caller's and not counted."""
        plan = self._prepare(shape)
        live: dict[fx.Node, int] = {}
        touched: dict[fx.Node, tuple[int, int]] = {}
        peak = 0
        self._done = {self.image}
        for k, n in enumerate(plan.order):
            if n in plan.place:
                g, off = plan.place[n]
                lo, hi = touched.get(g, (off, off))
                touched[g] = (min(lo, off), max(hi, off + plan.size[n]))
                live[g] = touched[g][1] - touched[g][0]
            else:
                live[n] = plan.size[n] * (4 // self._esize() if n is plan.out_node else 1)
            peak = max(peak, sum(live.values()) + self._stripe_temp_bytes(n, plan.rows_per[n]))
            self._done.add(n)
            for r in plan.reads[n]:
                if plan.last.get(r) == k and r is not plan.out_node:
                    if r not in plan.place:
                        live.pop(r, None)
                    elif plan.place[r][0] is r:  # a chain's last map: the shared allocation goes
                        live.pop(r, None)
        return int(peak)

    def _esize(self) -> int:
        return torch.empty((), dtype=self.storage).element_size()

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """(B,C,H,W) → the network's output, float32, computed layer by layer in row stripes. ``progress(done,
        total)`` after each materialised map. A map beyond float16's range (±65504) becomes inf and the output
        non-finite: that call is re-run with bfloat16 storage (same memory, float32's range, 8-bit mantissa)."""
        if x.device != self._device:
            raise NotStreamable(f"input on {x.device}, network on {self._device}")
        plan = self._prepare(tuple(x.shape))
        y = self._execute(x, plan, self.storage, progress)
        if self.storage == torch.float16 and not torch.isfinite(y).all():
            y = self._execute(x, plan, torch.bfloat16, progress)
        return y

    def _execute(self, x, plan: "_Plan", storage: torch.dtype, progress) -> torch.Tensor:
        self._buf = {self.image: x.float()}
        self._done = {self.image}
        self._stats, self._weights, self._arenas = {}, {}, {}
        try:
            self._run(plan, storage, progress)
            return self._buf[plan.out_node].contiguous()
        finally:
            self._buf, self._stats, self._weights, self._arenas = {}, {}, {}, {}

    def _run(self, plan: "_Plan", storage: torch.dtype, progress) -> None:
        info, device = self._info, self._device
        for k, n in enumerate(plan.order):
            b, c, h, w = info[n].shape
            dtype = torch.float32 if n is plan.out_node else storage
            if n in plan.place:
                g, off = plan.place[n]
                if g not in self._arenas:
                    self._arenas[g] = torch.empty(plan.arena[g], dtype=torch.uint8, device=device)
                buf = self._arenas[g][off:off + plan.size[n]].view(dtype).view(b, h, w, c).permute(0, 3, 1, 2)
                if g is n:  # the chain's last map: its view keeps the allocation alive from here
                    del self._arenas[g]
            else:
                buf = torch.empty((b, c, h, w), dtype=dtype, device=device, memory_format=_CL)
            norms = [u for u in n.users if info[u].norm is not None]
            for u in norms:
                self._stats[u] = _Stats(info[u].norm[0], info[u].norm[1], channels=c)
            pending: list[tuple[int, int, torch.Tensor]] = []
            src = plan.alias.get(n)
            if src is not None:  # bytes per row (per image) of this map and of the one it writes over
                row_out, row_src = plan.size[n] // (b * h), plan.size[src] // (b * info[src].shape[2])
                off_out, off_src = plan.place[n][1], plan.place[src][1]
            step = plan.rows_per[n]
            for a in range(0, h, step):
                e = min(h, a + step)
                if src is not None:  # write back the stripes that end below every row still to be read
                    self._dry = {"need": {}, "bytes": 0}
                    self._rows(n, a, e)
                    lo = self._dry["need"][src][0]
                    self._dry = None
                    while pending and off_out + pending[0][1] * row_out <= off_src + lo * row_src:
                        pa, pe, pt = pending.pop(0)
                        buf[:, :, pa:pe] = pt
                y = self._compute(n, a, e).to(device)
                for u in norms:
                    self._stats[u].add(y)
                if src is None:
                    buf[:, :, a:e].copy_(y)
                else:
                    pending.append((a, e, y.to(dtype)))
            for pa, pe, pt in pending:
                buf[:, :, pa:pe] = pt
            for u in norms:
                self._stats[u].finish(*info[u].norm[2:])
            self._buf[n] = buf
            self._weights.clear()
            self._done.add(n)
            for r in plan.reads[n]:
                if plan.last.get(r) == k and r is not plan.out_node and r is not self.image:
                    self._buf.pop(r, None)
            if progress:
                progress(k + 1, len(plan.order))


@dataclass
class _Plan:
    """The materialisation schedule of one input shape (see ``StreamedNetwork._prepare``)."""

    order: list  # materialised nodes, in evaluation order
    out_node: fx.Node
    reads: dict  # node → the materialised nodes its stripes read
    rows_per: dict  # node → stripe height
    last: dict  # node → index in order of its last reader
    alias: dict  # node → the map it writes over
    place: dict  # node → (its chain's last node, byte offset in the shared allocation)
    arena: dict  # chain's last node → bytes
    size: dict  # node → bytes in the storage dtype


def _nbytes(shape, rows: int | None, esize: int = 4) -> int:
    b, c, h, w = shape
    return b * c * (h if rows is None else rows) * w * esize


def _count_uses(user: fx.Node, n: fx.Node) -> int:
    found = [0]

    def visit(a):
        if a is n:
            found[0] += 1
        return a

    fx.node.map_arg((user.args, user.kwargs), visit)
    return found[0]


def _cat_dim(n: fx.Node, info) -> int:
    d = n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else 0)
    return info[d].value if isinstance(d, fx.Node) else d


def _flip_dims(n: fx.Node, info) -> tuple[int, ...]:
    dims = n.kwargs.get("dims", n.args[1:] if n.op == "call_method" else n.args[1])
    if isinstance(dims, int):
        dims = (dims,)
    if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
        dims = tuple(dims[0])
    return tuple(info[d].value if isinstance(d, fx.Node) else d for d in dims)
