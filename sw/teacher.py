"""Float teachers for knowledge distillation: a small float CNN and its training logits.

:func:`train_teacher` trains an ordinary float32 CNN (3x3 conv, BatchNorm, ReLU, max-pool
stages, then dense) on a data set and writes the logits it gives every *training* image
(eval mode, no augmentation) to a ``.npy`` file, plus a JSON sidecar with its test accuracy.
``xnorflow train --teacher FILE --kd-alpha A`` then adds Hinton's distillation term to the
binary student's loss (:func:`xnorflow.sw.train.train`). The teacher is never deployed: it
only shapes the student's training targets.
"""

from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import Dataset
from .errors import UserError

__all__ = ["FloatCNN", "train_teacher", "load_teacher_logits"]


class FloatCNN(nn.Module):
    """``[conv-BN-ReLU] x per_stage, pool`` per stage, then ``dense-BN-ReLU-dropout-dense``."""

    def __init__(self, in_shape, classes: int, stages=(32, 64), per_stage: int = 1,
                 dense: int = 256):
        super().__init__()
        h, w, c = in_shape
        layers: list[nn.Module] = []
        for oc in stages:
            for _ in range(per_stage):
                layers += [nn.Conv2d(c, oc, 3, padding=1, bias=False), nn.BatchNorm2d(oc),
                           nn.ReLU(inplace=True)]
                c = oc
            if min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, dense, bias=False),
                                  nn.BatchNorm1d(dense), nn.ReLU(inplace=True), nn.Dropout(0.3),
                                  nn.Linear(dense, classes))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        return self.head(self.features(x))


def _logits(model: nn.Module, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat([model(x[s : s + batch]) for s in range(0, len(x), batch)])


def train_teacher(data: Dataset, out: str | Path, epochs: int = 10, batch: int = 128,
                  lr: float = 2e-3, seed: int = 0, device: str = "auto", augment: int = 2,
                  log=print) -> dict:
    """Train a :class:`FloatCNN` on ``data``; write ``out`` (``.npy`` training logits) and
    ``out.json`` (test accuracy, epochs, device, time). Returns the JSON document."""
    from . import files
    from .train import check_common, random_shift, resolve_device

    out = Path(out)
    check_common(epochs=epochs, batch=batch, lr=lr, seed=seed)
    if augment < 0:
        raise UserError(f"augment {augment}: must be >= 0 pixels")
    if out.is_dir():
        raise UserError(f"{out}: is a folder; give a file name such as teacher.npy")
    files.check_can_create(out)
    dev = torch.device(resolve_device(device))
    torch.manual_seed(seed)
    model = FloatCNN(data.shape, data.num_classes).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    x_tr, y_tr = torch.from_numpy(data.x_train).to(dev), torch.from_numpy(data.y_train).to(dev)
    x_te = torch.from_numpy(data.x_test).to(dev)
    n, t0, history = len(x_tr), time.time(), []
    steps = max(1, n // batch)
    for epoch in range(epochs):
        model.train()
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * epoch / max(epochs, 1)))
        perm = torch.from_numpy(np.random.default_rng(seed * 1000 + epoch).permutation(n)).to(dev)
        rng = np.random.default_rng([seed, epoch, 7])
        for s in range(steps):
            idx = perm[s * batch : (s + 1) * batch]
            loss = F.cross_entropy(model(random_shift(x_tr[idx], augment, rng)), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        acc = float((_logits(model, x_te).argmax(1).cpu().numpy() == data.y_test).mean())
        history.append({"epoch": epoch + 1, "test_acc": acc, "time_s": time.time() - t0})
        log(f"teacher epoch {epoch + 1}/{epochs}: test accuracy {acc:.4f}")
    logits = _logits(model, x_tr).cpu().numpy().astype(np.float32)
    train_acc = float((logits.argmax(1) == data.y_train).mean())
    buf = io.BytesIO()
    np.save(buf, logits)
    files.write_bytes(out, buf.getvalue())
    doc = {"dataset": data.name, "train_images": n, "classes": data.num_classes,
           "test_acc": history[-1]["test_acc"] if history else None, "train_acc": train_acc,
           "epochs": epochs, "batch": batch, "lr": lr, "seed": seed, "augment": augment,
           "device": str(dev), "time_s": time.time() - t0, "history": history}
    files.write_text(Path(f"{out}.json"), json.dumps(doc, indent=1) + "\n")
    return doc


def load_teacher_logits(path: str | Path, data: Dataset) -> np.ndarray:
    """Teacher logits ``(N_train, classes)`` float32 for ``data``; one-line error otherwise."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--teacher {path}: no such file (make one with `xnorflow teacher`)")
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - np.load raises many types on damaged files
        raise UserError(f"--teacher {path}: not a .npy array ({str(e).splitlines()[0]})"
                        ) from None
    want = (len(data.y_train), data.num_classes)
    if z.shape != want or not np.issubdtype(z.dtype, np.floating):
        raise UserError(f"--teacher {path}: logits of shape {z.shape} ({z.dtype}); the "
                        f"{data.name} training set needs float {want}")
    if not np.isfinite(z).all():
        raise UserError(f"--teacher {path}: holds NaN or infinite logits")
    return z.astype(np.float32)
