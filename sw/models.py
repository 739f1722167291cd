"""Model registry: ``mlp`` and ``cnn`` binary networks built from :mod:`xnorflow.sw.layers`.

A model takes ``uint8`` images ``(N, H, W, C)`` (the data sets' format), quantises them to
``in_bits`` bits with :func:`xnorflow.sw.encoding.quantize_pixels` and returns logits.
Every model is a list of :class:`~xnorflow.sw.layers.Block` s; block ``i`` becomes IR layer
``i`` (its conv/dense op, ReLU and pool, plus block ``i + 1``'s BN and BinActiv folded into
thresholds).

Configuration (a JSON-able dict, saved beside every checkpoint)::

    {"model": "mlp", "widths": [256, 256], "mode": "xnor", "in_bits": 8, "act_bits": 1,
     "beta": false, "ste": "hardtanh", "relu": false, "input_shape": [8, 8, 1],
     "classes": ["0", ..., "9"]}

``widths`` for ``mlp`` are the hidden widths; for ``cnn`` a dict
``{"conv": [32, 64], "dense": [256]}`` (CLI: ``--widths 32,64:256``): each conv is 3x3,
stride 1, padding 1 (binary pad value -1), followed by 2x2 max-pooling.
"""

from __future__ import annotations

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


def parse_widths(model: str, text: str | None):
    """Parse ``--widths``: ``256,256`` for mlp, ``32,64:256`` (conv:dense) for cnn."""
    if text is None or text == "":
        return DEFAULT_WIDTHS[model]
    try:
        if model == "cnn":
            conv, _, dense = text.partition(":")
            return {"conv": [int(v) for v in conv.split(",") if v],
                    "dense": [int(v) for v in dense.split(",") if v]}
        return [int(v) for v in text.split(",") if v]
    except ValueError:
        raise UserError(f"--widths {text!r}: expected comma-separated integers "
                        f"(cnn: conv widths ':' dense widths, e.g. 32,64:256)") from None


class BinaryNet(nn.Module):
    """A stack of XNOR-Net blocks ending in a :class:`~xnorflow.sw.layers.LogitHead`."""

    def __init__(self, blocks: list[Block], config: dict):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.config = dict(config)
        self.in_bits = int(config["in_bits"])
        self.input_shape = tuple(config["input_shape"])

    def quantize(self, pixels) -> torch.Tensor:
        """``uint8`` images ``(N, H, W, C)`` -> quantised ``u`` as float32 ``(N, H, W, C)``."""
        px = pixels.numpy() if isinstance(pixels, torch.Tensor) else np.asarray(pixels)
        if px.shape[1:] != self.input_shape:
            raise UserError(f"images have shape {px.shape[1:]}, the model expects "
                            f"{self.input_shape}")
        return torch.from_numpy(enc.quantize_pixels(px, self.in_bits).astype(np.float32))

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
        conv, dense = [int(v) for v in widths["conv"]], [int(v) for v in widths["dense"]]
        if not conv or min(conv + dense or [1]) < 1:
            raise UserError(f"cnn widths {widths}: need at least one positive conv width")
        signed_hidden = mode in ("xnor", "bnn")
        ch, hh, ww = c, h, w
        for i, oc in enumerate(conv):
            if hh < 2 or ww < 2:
                raise UserError(f"cnn: {len(conv)} conv+pool blocks do not fit a {h}x{w} input")
            first = i == 0
            op = BinaryConv2d(ch, oc, 3, 1, 1, mode, signed_input=False if first
                              else signed_hidden)
            blocks.append(Block(op, None if first else ChannelBN(ch), None if first else act(),
                                relu=relu, pool=2, beta=beta))
            ch, hh, ww = oc, hh // 2, ww // 2
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
