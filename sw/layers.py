"""Binary layers for training: BinaryLinear / BinaryConv2d and the XNOR-Net block.

Modes (``mode``):

* ``bwn``    -- binary weights, real activations (ReLU), per-output-channel ``alpha = mean|W|``.
  Trains in float only: hidden activations are real, so it cannot be lowered to the IR.
* ``xnor``   -- binary weights and binary activations, ``alpha``; optionally the XNOR-Net
  input scaling ``K`` (``beta=True``: the average of ``|I|`` over channels, box-filtered over
  each window). ``K`` is input dependent and *dropped at deploy* (see ``docs/training.md``).
* ``bnn``    -- binary weights and activations, no scaling (Courbariaux/Hubara).
* ``dorefa`` -- binary weights (scaled by the layer's scalar ``mean|W|``) and ``k``-bit
  unsigned activations ``u = round(clip(x, 0, 1) * (2^k - 1))``, ``k`` in 1, 2, 4, 8.

Values follow :mod:`xnorflow.sw.encoding`: sign is ``+1`` for ``x >= 0`` (:func:`sign_pm1`
mirrors :func:`~xnorflow.sw.encoding.sign_bits` and is tested against it), a convolution's
spatial padding of binary activations is the value ``-1`` and of unsigned inputs the value
``0`` (an all-zero segment in every bit-plane: :func:`pad_value`).

Latent weights are clipped to ``[-1, 1]`` after every optimiser step (BinaryConnect,
:func:`clip_weights`); the straight-through estimator is the hardtanh one
(``grad * [|x| <= 1]``) or ApproxSign of Bi-Real Net (``grad * max(0, 2 - 2|x|)``).

Exactness: in eval mode the binary dot products are computed in float64, rounded to the
nearest integer (a no-op for an exact algorithm; it also absorbs the tiny errors of FFT or
Winograd convolutions a GPU library may pick) and returned as float32; they are integers below
2^24 (checked by the compiler), so they are exact whatever the summation order or device,
and every later step is a chain of elementwise, correctly rounded, monotone float32
operations, which the compiler (:mod:`xnorflow.sw.lower`) evaluates on the
*same* code path (:meth:`Block.pre_pool` then :meth:`Block.activation_levels`) to find the
integer thresholds. Deploy mode therefore reproduces float-sim bit for bit (without ``beta``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import encoding as enc

MODES = ("bwn", "xnor", "bnn", "dorefa")
STES = ("hardtanh", "approxsign")
DOREFA_BITS = (1, 2, 4, 8)


def sign_pm1(x: torch.Tensor) -> torch.Tensor:
    """``+1`` where ``x >= 0`` else ``-1`` (the contract's ``sign(0) = +1``), dtype of ``x``."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


def pad_value(signed_input: bool) -> float:
    """Value of a spatially padded input pixel, per the contract's all-zero padded segment.

    A zero bit is the value -1 for binary (+-1) inputs (``bits_to_values(ACT_PAD_BIT)``) and
    an all-zero set of bit-planes is the value 0 for unsigned multi-bit inputs.
    """
    if signed_input:
        return float(enc.bits_to_values(enc.ACT_PAD_BIT))
    return 0.0


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, approx: bool):
        ctx.save_for_backward(x)
        ctx.approx = approx
        return sign_pm1(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if ctx.approx:  # ApproxSign (Bi-Real Net): derivative of the piecewise quadratic
            return g * torch.clamp(2 - 2 * x.abs(), min=0), None
        return torch.where(x.abs() <= 1, g, 0.0), None


def binarize(x: torch.Tensor, ste: str = "hardtanh") -> torch.Tensor:
    """Sign with a straight-through gradient (``hardtanh`` or ``approxsign``)."""
    return _SignSTE.apply(x, ste == "approxsign")


class _QuantSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, levels: int):
        ctx.save_for_backward(x)
        ctx.levels = levels
        return torch.round(torch.clamp(x, 0, 1) * levels)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * ((x >= 0) & (x <= 1)).to(g.dtype) * ctx.levels, None


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, g):
        return g


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to the nearest integer with an identity gradient."""
    return _RoundSTE.apply(x)


def _chan(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """View per-channel parameter ``p`` to broadcast along dim 1 of ``x``."""
    return p.view(1, -1, *([1] * (x.dim() - 2)))


class ChannelBN(nn.Module):
    """Batch norm over dim 1 whose eval forward is an explicit chain of elementwise ops.

    Training uses ``F.batch_norm`` (batch statistics, running averages updated); eval computes
    ``((x - mean) / sqrt(var + eps)) * gamma + beta`` one correctly rounded op at a time, so
    the compiler can evaluate exactly the same function on candidate accumulator values.
    """

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.channels, self.eps, self.momentum = channels, eps, momentum
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                True, self.momentum, self.eps)
        std = torch.sqrt(self.running_var + self.eps)
        y = x - _chan(self.running_mean, x)
        y = y / _chan(std, x)
        y = y * _chan(self.weight, x)
        return y + _chan(self.bias, x)


class Activation(nn.Module):
    """The BinActiv step: sign (xnor, bnn), k-bit levels (dorefa) or ReLU (bwn).

    :meth:`levels` turns the output into the IR's integer levels (bits for sign: ``+1 -> 1``).
    """

    def __init__(self, mode: str, act_bits: int = 1, ste: str = "hardtanh"):
        super().__init__()
        self.mode, self.act_bits, self.ste = mode, act_bits, ste

    @property
    def signed(self) -> bool:
        return self.mode in ("xnor", "bnn")

    @property
    def bits(self) -> int:
        return self.act_bits if self.mode == "dorefa" else 1

    @property
    def integer(self) -> bool:
        return self.mode != "bwn"

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        if self.mode in ("xnor", "bnn"):
            return binarize(a, self.ste)
        if self.mode == "dorefa":
            return _QuantSTE.apply(a, (1 << self.act_bits) - 1)
        return F.relu(a)

    def levels(self, s: torch.Tensor) -> torch.Tensor:
        """Integer levels of an activation output (sign: bit ``1`` for ``+1``)."""
        if self.signed:
            return (s > 0).to(torch.int64)
        return s.to(torch.int64)


class _BinaryOp(nn.Module):
    """Shared parts of BinaryLinear / BinaryConv2d: latent weights, sign, alpha."""

    weight: nn.Parameter

    def __init__(self, mode: str):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.mode = mode

    def binary_weight(self) -> torch.Tensor:
        """Sign of the latent weights with a straight-through gradient (|w| <= 1)."""
        return binarize(self.weight, "hardtanh")

    def alpha(self) -> torch.Tensor | None:
        """The weight scale: per output channel (bwn, xnor), per layer (dorefa), none (bnn)."""
        w = self.weight.abs().flatten(1)
        if self.mode in ("bwn", "xnor"):
            return w.mean(dim=1)
        if self.mode == "dorefa":
            return w.mean().expand(w.shape[0])
        return None

    def scale_dot(self, dot: torch.Tensor) -> torch.Tensor:
        """Monotone per-channel scaling of the integer dot product (channels on dim 1)."""
        a = self.alpha()
        return dot if a is None else dot * _chan(a, dot)

    def clip_(self) -> None:
        with torch.no_grad():
            self.weight.clamp_(-1, 1)


class BinaryLinear(_BinaryOp):
    """Dense layer with binary weights: ``y = alpha * (x . sign(W)) [* K]``.

    Parameters
    ----------
    in_features, out_features : int
    mode : str
        One of :data:`MODES`.
    """

    def __init__(self, in_features: int, out_features: int, mode: str = "xnor"):
        super().__init__(mode)
        self.in_features, self.out_features = in_features, out_features
        w = torch.empty(out_features, in_features)
        nn.init.uniform_(w, -1, 1)
        self.weight = nn.Parameter(w * min(1.0, 3 / math.sqrt(in_features)))

    def dot(self, x: torch.Tensor) -> torch.Tensor:
        wb = self.binary_weight()
        if self.training:
            return F.linear(x, wb)
        # exact integers (see module doc); the round makes them exact whatever algorithm the
        # device's float64 GEMM uses (a no-op where it is exact already, as on the CPU)
        return torch.round(F.linear(x.double(), wb.double())).float()

    def forward(self, x: torch.Tensor, k: torch.Tensor | None = None) -> torch.Tensor:
        y = self.scale_dot(self.dot(x))
        return y if k is None else y * k


class BinaryConv2d(_BinaryOp):
    """Convolution with binary weights; spatial padding uses the contract's pad value.

    ``signed_input`` says whether the input is +-1 (padded with -1) or unsigned levels
    (padded with 0). Padding is applied with ``F.pad(value=...)``, never zero-padding by the
    convolution itself.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, padding: int = 1, mode: str = "xnor",
                 signed_input: bool = True):
        super().__init__(mode)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.signed_input = signed_input
        fan_in = in_channels * kernel_size * kernel_size
        w = torch.empty(out_channels, in_channels, kernel_size, kernel_size)
        nn.init.uniform_(w, -1, 1)
        self.weight = nn.Parameter(w * min(1.0, 3 / math.sqrt(fan_in)))

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        p = self.padding
        if p == 0:
            return x
        return F.pad(x, (p, p, p, p), value=pad_value(self.signed_input))

    def dot(self, x: torch.Tensor) -> torch.Tensor:
        wb = self.binary_weight()
        xp = self.pad(x)
        if self.training:
            return F.conv2d(xp, wb, stride=self.stride)
        return torch.round(F.conv2d(xp.double(), wb.double(), stride=self.stride)).float()

    def forward(self, x: torch.Tensor, k: torch.Tensor | None = None) -> torch.Tensor:
        y = self.scale_dot(self.dot(x))
        return y if k is None else y * k


class Block(nn.Module):
    """One XNOR-Net block: BN -> BinActiv -> [flatten] -> BinConv/BinLinear -> (ReLU) -> Pool.

    The first block has no BN/BinActiv (its input is the quantised pixels ``u``); the last
    block's op is a :class:`LogitHead`. ``beta`` multiplies the op's output by the XNOR-Net
    input scale ``K`` (training only; dropped at deploy).
    """

    def __init__(self, op: nn.Module, bn: ChannelBN | None = None,
                 act: Activation | None = None, relu: bool = False, pool: int = 1,
                 flatten_in: bool = False, beta: bool = False):
        super().__init__()
        self.bn, self.act, self.op = bn, act, op
        self.relu, self.pool, self.flatten_in = relu, pool, flatten_in
        self.beta = beta and act is not None and act.signed
        self.use_beta = self.beta  # switched off to evaluate "beta dropped at deploy"

    def input_activation(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """BN then BinActiv: returns ``(a, s)`` (pre-activation and activation)."""
        if self.bn is None:
            return x, x
        a = self.bn(x)
        return a, self.act(a)

    def activation_levels(self, y: torch.Tensor) -> torch.Tensor:
        """Integer levels of this block's BinActiv applied to the previous block's output."""
        _, s = self.input_activation(y)
        return self.act.levels(s)

    def k_scale(self, a: torch.Tensor) -> torch.Tensor:
        """XNOR-Net ``K``: mean over channels of ``|a|``, averaged over each window."""
        m = a.abs().mean(dim=1, keepdim=True)
        op = self.op
        if isinstance(op, BinaryConv2d):
            return F.avg_pool2d(m, op.kernel_size, op.stride, op.padding,
                                count_include_pad=True)
        return m.flatten(1).mean(dim=1, keepdim=True) if m.dim() > 2 else m

    def pre_pool(self, dot: torch.Tensor) -> torch.Tensor:
        """The monotone chain from the dot product to the pooled value (alpha, ReLU)."""
        y = self.op.scale_dot(dot)
        return F.relu(y) if self.relu else y

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(output, s)``: the block output and its BinActiv output (before flatten)."""
        a, s = self.input_activation(x)
        inp = s.flatten(1) if self.flatten_in else s
        if isinstance(self.op, LogitHead):
            return self.op(inp), s
        k = None
        if self.use_beta:
            k = self.k_scale(a.flatten(1) if self.flatten_in else a)
        y = self.op.dot(inp)
        y = self.pre_pool(y) if k is None else self.op.scale_dot(y) * k
        if k is not None and self.relu:
            y = F.relu(y)
        if self.pool > 1:
            y = F.max_pool2d(y, self.pool, self.pool)
        return y, s


class LogitHead(nn.Module):
    """Last layer: binary weights, integer accumulator, ``logits = scale * (dot + bias)``.

    ``bias`` is rounded to integers (straight-through) and ``scale = exp(log_scale) > 0`` is
    one scalar, so the argmax over the integer scores equals the argmax over the logits.
    """

    def __init__(self, in_features: int, classes: int, mode: str = "xnor"):
        super().__init__()
        self.linear = BinaryLinear(in_features, classes, "bnn")
        self.mode = mode
        self.bias = nn.Parameter(torch.zeros(classes))
        self.log_scale = nn.Parameter(torch.tensor(-0.5 * math.log(in_features) + 1.0))

    @property
    def weight(self) -> nn.Parameter:
        return self.linear.weight

    def int_bias(self) -> torch.Tensor:
        return round_ste(self.bias)

    def scale(self) -> torch.Tensor:
        return torch.exp(self.log_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.linear.dot(x) + self.int_bias()) * self.scale()


def clip_weights(model: nn.Module) -> None:
    """Clip every binary layer's latent weights to ``[-1, 1]`` (call after each step)."""
    for m in model.modules():
        if isinstance(m, _BinaryOp):
            m.clip_()
