"""Deploy mode: a compiled model run with the compiler's integer semantics, fast and batched.

This is the PyTorch backend of ``xnorflow compare``. It computes each layer's hardware
accumulators with a float64 convolution of exact small integers (``acc = (dot + K) / 2`` for
+-1 inputs, ``acc = dot + (2^B - 1) n_neg`` for unsigned ones; spatial padding is the
contract's pad value), then applies the output stage of the golden model
(:func:`xnorflow.sw.golden.output_stage`: thresholds, pooling on bits, integer scores), so
ties, pooling and argmax are decided only by :mod:`xnorflow.sw.encoding`. Tests check it
against :func:`xnorflow.sw.golden.run` bit for bit (hidden bits, accumulators, scores,
predictions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import encoding as enc
from .golden import output_stage
from .ir import CompiledModel, Layer
from .layers import pad_value

__all__ = ["DeployResult", "layer_accumulators", "run", "accuracy"]


@dataclass
class DeployResult:
    """Scores ``(N, classes)``, ``logits = scale * scores``, first-argmax ``predictions``;
    ``activations[i]`` the hidden maps ``(N, H, W, C)`` when asked for."""

    scores: np.ndarray
    logits: np.ndarray
    predictions: np.ndarray
    activations: list[np.ndarray] | None = None


def layer_accumulators(layer: Layer, x, device: str | torch.device = "cpu") -> np.ndarray:
    """Hardware accumulators ``(N, Ho, Wo, out_c)`` of one layer for input levels/bits ``x``.

    The float64 convolution runs on ``device`` and is rounded to integers there, so the
    result is exact on any device (the values are small integers, far below 2^53).
    """
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[1:] != (layer.in_h, layer.in_w, layer.in_c):
        raise ValueError(f"layer {layer.name!r}: input shape {x.shape}, expected "
                         f"(N, {layer.in_h}, {layer.in_w}, {layer.in_c})")
    vals = enc.bits_to_values(x) if layer.signed_input else x.astype(np.int64)
    v = torch.from_numpy(vals.astype(np.float64)).to(device).permute(0, 3, 1, 2)
    p = layer.pad
    if p:
        v = F.pad(v, (p, p, p, p), value=pad_value(layer.signed_input))
    w = torch.from_numpy(enc.bits_to_values(layer.weights).astype(np.float64)).to(device)
    dot = F.conv2d(v, w.permute(0, 3, 1, 2), stride=layer.stride)
    dot = torch.round(dot).to(torch.int64).permute(0, 2, 3, 1).cpu().numpy()
    if layer.signed_input:
        return (dot + layer.k_valid) // 2
    return dot + ((1 << layer.in_bits) - 1) * layer.n_neg


def run(model: CompiledModel, pixels, batch_size: int = 1000,
        hidden: bool = False, device: str | torch.device = "cpu") -> DeployResult:
    """Run a compiled model on ``uint8`` images ``(N, H, W, C)`` in batches.

    ``device`` runs the convolutions there (e.g. ``cuda``); thresholds, pooling and scores
    stay in NumPy, with the golden model's code.
    """
    px = np.asarray(pixels)
    if px.ndim == 3:
        px = px[None]
    if px.shape[1:] != (model.in_h, model.in_w, model.in_c):
        raise ValueError(f"images have shape {px.shape[1:]}, the model expects "
                         f"{(model.in_h, model.in_w, model.in_c)}")
    scores, acts = [], [[] for _ in model.layers[:-1]]
    for s in range(0, px.shape[0], batch_size):
        x = enc.quantize_pixels(px[s : s + batch_size], model.layers[0].in_bits)
        for i, layer in enumerate(model.layers):
            x = output_stage(layer, layer_accumulators(layer, x, device))
            if hidden and layer.output == "threshold":
                acts[i].append(x)
        scores.append(x)
    sc = np.concatenate(scores) if scores else np.zeros((0, model.layers[-1].out_c), np.int64)
    return DeployResult(
        scores=sc,
        logits=model.layers[-1].scale * sc.astype(np.float64),
        predictions=enc.argmax_first(sc),
        activations=[np.concatenate(a) for a in acts] if hidden else None,
    )


def accuracy(model: CompiledModel, pixels, labels) -> float:
    """Deploy-mode accuracy on a labelled set."""
    pred = run(model, pixels).predictions
    return float((pred == np.asarray(labels)).mean()) if len(pred) else float("nan")
