"""Model registry: ``mlp`` and ``cnn`` binary networks built from :mod:`xnorflow.sw.layers`.

A model takes ``uint8`` images ``(N, H, W, C)`` (the data sets' format, a NumPy array or a
torch tensor on the model's device), quantises them to ``in_bits`` bits exactly as
:func:`xnorflow.sw.encoding.quantize_pixels` does and returns logits. Every model is a list
of :class:`~xnorflow.sw.layers.Block` s; block ``i`` becomes IR layer ``i`` (its conv/dense
op, ReLU and pool, plus block ``i + 1``'s BN and BinActiv folded into thresholds).

Configuration (a JSON-able dict, saved beside every checkpoint)::

    {"model": "mlp", "widths": [256, 256], "mode": "xnor", "in_bits": 8, "act_bits": 1,
     "beta": false, "ste": "hardtanh", "relu": false, "input_shape": [8, 8, 1],
     "classes": ["0", ..., "9"]}

``widths`` for ``mlp`` are the hidden widths; for ``cnn`` a dict
``{"conv": [...], "dense": [...]}`` (CLI: ``--widths CONV,...:DENSE,...``). A conv entry is
a token ``C[kK][sS][p[P]]``: ``C`` output channels, a ``K x K`` kernel (odd, default 3,
padding ``K // 2`` with the binary pad value), stride ``S`` (default 1), and ``p`` a ``2 x 2``
max-pool after it (``pP``: ``P x P``, stride ``P``). E.g. ``64,64p,128,128p:512`` is a
VGG-style stack, ``128s2`` a strided conv, ``64k1`` a 1x1 conv. Plain integers (JSON ints, or
a CLI list in which no conv token has a suffix, e.g. ``32,64:256``) keep their original
meaning: 3x3, stride 1, each followed by a 2x2 max-pool (see :func:`conv_layers`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import encoding as enc
from .errors import UserError
from .layers import (
    DOREFA_BITS,
    MODES,
    STES,
    Activation,
    BinaryConv2d,
    BinaryLinear,
    Block,
    ChannelBN,
    LogitHead,
)

MODELS = ("mlp", "cnn")
DEFAULT_WIDTHS = {"mlp": [256, 256], "cnn": {"conv": [32, 64], "dense": [256]}}


_CONV_TOKEN = re.compile(r"^(\d+)(?:k(\d+))?(?:s(\d+))?(?:(p)(\d*))?$")
CONV_SYNTAX = "CHANNELS[kK][sS][p[P]], e.g. 64, 64p, 128s2, 256k1, 64p4"


@dataclass(frozen=True)
class ConvSpec:
    """One conv layer of a ``cnn``: channels, kernel, stride, max-pool window (1: none)."""

    channels: int
    kernel: int = 3
    stride: int = 1
    pool: int = 1

    @property
    def pad(self) -> int:
        return self.kernel // 2

    @property
    def token(self) -> str:
        """The canonical token (the inverse of :func:`parse_conv_token`)."""
        t = str(self.channels)
        t += f"k{self.kernel}" if self.kernel != 3 else ""
        t += f"s{self.stride}" if self.stride != 1 else ""
        return t + ("" if self.pool == 1 else "p" if self.pool == 2 else f"p{self.pool}")


def parse_conv_token(token, where: str = "--widths") -> ConvSpec:
    """A conv entry -> :class:`ConvSpec`; an ``int`` is the original ``3x3 + 2x2 pool``.

    Raises :class:`UserError` naming the token (and ``where`` it came from).
    """
    if isinstance(token, bool):
        raise UserError(f"{where}: bad conv entry {token!r} (expected {CONV_SYNTAX})")
    if isinstance(token, int):
        if token < 1:
            raise UserError(f"{where}: conv width {token} must be >= 1")
        return ConvSpec(token, 3, 1, 2)
    m = _CONV_TOKEN.match(str(token).strip())
    if m is None:
        raise UserError(f"{where}: bad conv token {str(token)!r} (expected {CONV_SYNTAX})")
    c, k, s, p, pk = m.groups()
    spec = ConvSpec(int(c), int(k) if k else 3, int(s) if s else 1,
                    (int(pk) if pk else 2) if p else 1)
    if spec.channels < 1:
        raise UserError(f"{where}: conv token {token!r}: channels must be >= 1")
    if spec.kernel < 1 or spec.kernel % 2 == 0:
        raise UserError(f"{where}: conv token {token!r}: kernel k{spec.kernel} must be odd "
                        "(1, 3, 5, ...)")
    if spec.stride < 1:
        raise UserError(f"{where}: conv token {token!r}: stride s{spec.stride} must be >= 1")
    if p and spec.pool < 2:
        raise UserError(f"{where}: conv token {token!r}: pool p{spec.pool} must be >= 2")
    return spec


def conv_layers(widths: dict, where: str = "widths") -> list[ConvSpec]:
    """The conv layers of a ``cnn`` configuration's ``widths``."""
    return [parse_conv_token(t, where) for t in widths["conv"]]


def parse_widths(model: str, text: str | None):
    """Parse ``--widths``: ``256,256`` for mlp; ``CONV,...:DENSE,...`` for cnn.

    cnn conv tokens follow :data:`CONV_SYNTAX` (module docstring). When no conv token has a
    suffix (``32,64:256``) the list is the original short form and is returned as ints
    (every conv pooled); otherwise each token is returned in canonical form (``64``, ``64p``).
    ``None`` gives the model's default; an empty list (``""``, ``","``) is refused.
    Raises :class:`UserError` naming the first bad token.
    """
    if text is None:
        return DEFAULT_WIDTHS[model]
    if not text.replace(",", "").replace(":", "").strip():
        example = "32,64:256" if model == "cnn" else "256,256"
        raise UserError(f"--widths {text!r}: no widths given; e.g. --widths {example}, or leave "
                        "--widths out for the default")
    if model == "cnn":
        conv, _, dense = text.partition(":")
        tokens = [t.strip() for t in conv.split(",") if t.strip()]
        where = f"--widths {text!r}"
        specs = [parse_conv_token(t, where) for t in tokens]
        out_dense = []
        for t in (v.strip() for v in dense.split(",") if v.strip()):
            if not t.isdigit() or int(t) < 1:
                raise UserError(f"{where}: bad dense width {t!r} (expected a positive integer)")
            out_dense.append(int(t))
        if all(t.isdigit() for t in tokens):  # the short form: every conv pooled
            return {"conv": [s.channels for s in specs], "dense": out_dense}
        return {"conv": [s.token for s in specs], "dense": out_dense}
    out = []
    for t in (v.strip() for v in text.split(",") if v.strip()):
        if not t.isdigit() or int(t) < 1:
            raise UserError(f"--widths {text!r}: bad width {t!r} (mlp: comma-separated "
                            "positive integers, e.g. 256,256)")
        out.append(int(t))
    return out


def quantize_pixels_torch(pixels: torch.Tensor, bits: int) -> torch.Tensor:
    """:func:`xnorflow.sw.encoding.quantize_pixels` on a ``uint8`` tensor (any device)."""
    if not 1 <= bits <= enc.PIXEL_BITS:
        raise ValueError(f"input bits must be in 1..{enc.PIXEL_BITS}, not {bits}")
    if pixels.dtype != torch.uint8:
        raise TypeError(f"input pixels must be uint8 (0..255), not {pixels.dtype}")
    return torch.bitwise_right_shift(pixels, enc.PIXEL_BITS - bits)


class BinaryNet(nn.Module):
    """A stack of XNOR-Net blocks ending in a :class:`~xnorflow.sw.layers.LogitHead`."""

    def __init__(self, blocks: list[Block], config: dict):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.config = dict(config)
        self.in_bits = int(config["in_bits"])
        self.input_shape = tuple(config["input_shape"])

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def quantize(self, pixels) -> torch.Tensor:
        """``uint8`` images ``(N, H, W, C)`` -> quantised ``u`` as float32 ``(N, H, W, C)``.

        ``pixels`` is a NumPy array or a tensor; the result is on the model's device.
        """
        px = pixels if isinstance(pixels, torch.Tensor) else torch.from_numpy(
            np.ascontiguousarray(pixels))
        if tuple(px.shape[1:]) != self.input_shape:
            raise UserError(f"images have shape {tuple(px.shape[1:])}, the model expects "
                            f"{self.input_shape}")
        px = px.to(self.device, non_blocking=True)
        return quantize_pixels_torch(px, self.in_bits).to(torch.float32)

    def _first_input(self, pixels) -> torch.Tensor:
        u = self.quantize(pixels)
        if isinstance(self.blocks[0].op, BinaryConv2d):
            return u.permute(0, 3, 1, 2).contiguous()
        return u.reshape(u.shape[0], -1)  # HWC order, as the IR's segments

    def forward(self, pixels) -> torch.Tensor:
        return self.forward_hidden(pixels)[0]

    def forward_hidden(self, pixels) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the hidden activations as IR levels ``(N, H, W, C)`` (dense: H=W=1)."""
        x = self._first_input(pixels)
        hidden = []
        for i, block in enumerate(self.blocks):
            x, s = block(x)
            if i > 0:
                lv = block.act.levels(s) if block.act.integer else s
                hidden.append(lv.permute(0, 2, 3, 1) if lv.dim() == 4 else lv[:, None, None, :])
        return x, hidden

    def set_beta(self, on: bool) -> None:
        """Switch the XNOR-Net input scaling ``K`` on or off (off = what deploy computes)."""
        for b in self.blocks:
            b.use_beta = b.beta and on


def build_model(config: dict) -> BinaryNet:
    """Build a model from its configuration dict (see the module docstring)."""
    name, mode = config["model"], config["mode"]
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    if mode not in MODES:
        raise UserError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    ste = config.get("ste", "hardtanh")
    if ste not in STES:
        raise UserError(f"unknown STE {ste!r}; choose one of {', '.join(STES)}")
    act_bits = int(config.get("act_bits", 1))
    if mode == "dorefa" and act_bits not in DOREFA_BITS:
        raise UserError(f"--act-bits {act_bits}: DoReFa activations take k in {DOREFA_BITS}")
    in_bits = int(config["in_bits"])
    if not 1 <= in_bits <= enc.PIXEL_BITS:
        raise UserError(f"--in-bits {in_bits}: must be in 1..{enc.PIXEL_BITS}")
    h, w, c = config["input_shape"]
    classes = len(config["classes"])
    beta, relu = bool(config.get("beta", False)), bool(config.get("relu", False))
    widths = config["widths"]

    def act():
        return Activation(mode, act_bits, ste)

    blocks: list[Block] = []
    if name == "mlp":
        widths = [int(v) for v in widths]
        if not widths or min(widths) < 1:
            raise UserError(f"mlp widths {widths}: need at least one positive hidden width")
        n_in = h * w * c
        blocks.append(Block(BinaryLinear(n_in, widths[0], mode), relu=relu))
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            blocks.append(Block(BinaryLinear(a, b, mode), ChannelBN(a), act(), relu=relu,
                                beta=beta))
        blocks.append(Block(LogitHead(widths[-1], classes, mode), ChannelBN(widths[-1]), act()))
    else:
        convs = conv_layers(widths, "cnn widths")
        dense = [int(v) for v in widths["dense"]]
        if not convs or min(dense or [1]) < 1:
            raise UserError(f"cnn widths {widths}: need at least one conv layer and positive "
                            "dense widths")
        signed_hidden = mode in ("xnor", "bnn")
        ch, hh, ww = c, h, w
        for i, spec in enumerate(convs):
            ch_h = (hh + 2 * spec.pad - spec.kernel) // spec.stride + 1
            ch_w = (ww + 2 * spec.pad - spec.kernel) // spec.stride + 1
            if min(ch_h, ch_w) < spec.pool or min(ch_h, ch_w) < 1:
                raise UserError(f"cnn: conv {i + 1} ({spec.token!r}) does not fit its "
                                f"{hh}x{ww} input map (input {h}x{w}, widths {widths})")
            first = i == 0
            op = BinaryConv2d(ch, spec.channels, spec.kernel, spec.stride, spec.pad, mode,
                              signed_input=False if first else signed_hidden)
            blocks.append(Block(op, None if first else ChannelBN(ch), None if first else act(),
                                relu=relu, pool=spec.pool, beta=beta))
            ch, hh, ww = spec.channels, ch_h // spec.pool, ch_w // spec.pool
        feats, flat = ch * hh * ww, True
        for d in dense:
            blocks.append(Block(BinaryLinear(feats, d, mode), ChannelBN(ch), act(), relu=relu,
                                flatten_in=flat, beta=beta))
            feats, ch, flat = d, d, False
        blocks.append(Block(LogitHead(feats, classes, mode), ChannelBN(ch), act(),
                            flatten_in=flat))
    return BinaryNet(blocks, config)


def make_config(model: str, dataset_name: str, input_shape, classes, mode: str = "xnor",
                widths=None, in_bits: int = 8, act_bits: int = 1, beta: bool = False,
                ste: str = "hardtanh", relu: bool = False) -> dict:
    """A model configuration dict with defaults filled in."""
    if widths is None:
        widths = DEFAULT_WIDTHS.get(model)
    return {"model": model, "dataset": dataset_name, "mode": mode, "widths": widths,
            "in_bits": int(in_bits), "act_bits": int(act_bits) if mode == "dorefa" else 1,
            "beta": bool(beta), "ste": ste, "relu": bool(relu),
            "input_shape": [int(s) for s in input_shape], "classes": list(classes)}
