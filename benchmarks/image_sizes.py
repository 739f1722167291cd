"""Memory-image sizes of the Fashion-MNIST MLP 784-256-256-10 on every target.

Hand-built IRs of that shape (random weights and thresholds: sizes do not depend on values),
in two layouts of the first dense layer:

* ``flat``: the model input is one 1x1x784 pixel, so the first layer's 784 inputs are one
  segment packed into ceil(784 / W) words;
* ``image``: the model input is the 28x28x1 image (as sw.lower emits it): by the encoding
  contract each one-channel pixel is a segment padded to a whole W-bit word, unless the
  program feeds the first layer host-side windows (``program.hardware_model``, chosen when it
  saves beats), which pack each 784-bit window contiguously.

For each, every target: does it fit (check_fits), and the size report (sw/size.py).
Then the models ``xnorflow train`` builds by default (mlp 256-256, cnn 32-64:256, untrained:
sizes do not depend on the weights' values) through the real lowering (``sw.lower``), for
digits (8x8x1) and Fashion-MNIST (28x28x1) input shapes.

Run:  .venv/bin/python benchmarks/image_sizes.py > benchmarks/results/image_sizes.txt
"""

from __future__ import annotations

import numpy as np

from xnorflow.sw.errors import UserError
from xnorflow.sw.ir import CompiledModel, Layer
from xnorflow.sw.program import build_memories, check_fits
from xnorflow.sw.size import size_report, summary_line
from xnorflow.sw.targets import TARGETS


def fmnist_mlp(layout: str, seed: int = 0) -> CompiledModel:
    rng = np.random.default_rng(seed)
    h, w, c = (1, 1, 784) if layout == "flat" else (28, 28, 1)

    def thr(n, acc_max):
        return dict(thresholds=rng.integers(0, acc_max + 1, (n, 1)).astype(np.int64),
                    polarity=rng.choice(np.array([-1, 1], np.int8), n))

    l0 = Layer("L0", "dense", h, w, c, 256, h, w, 1, 0, 8, False,
               rng.integers(0, 2, (256, h, w, c)).astype(np.uint8), "threshold",
               **thr(256, 784 * 255))
    l1 = Layer("L1", "dense", 1, 1, 256, 256, 1, 1, 1, 0, 1, True,
               rng.integers(0, 2, (256, 1, 1, 256)).astype(np.uint8), "threshold",
               **thr(256, 256))
    l2 = Layer("L2", "dense", 1, 1, 256, 10, 1, 1, 1, 0, 1, True,
               rng.integers(0, 2, (10, 1, 1, 256)).astype(np.uint8), "integer",
               score_offset=np.zeros(10, np.int64))
    model = CompiledModel(h, w, c, [l0, l1, l2])
    model.validate()
    return model


def report(model: CompiledModel) -> None:
    from xnorflow.sw.targets import sim_target

    for name, target in TARGETS.items():
        try:
            check_fits(model, target)
        except UserError as e:
            print(f"  {name:9s} does not fit: {e}")
            # size of the images anyway, on the same geometry without memory limits
            target = sim_target(target.rows, target.cols, target.width, name=f"{name}*")
        rep = size_report(model, build_memories(model, target), target)
        print(f"  {target.name:9s} {summary_line(rep)}")
    print()


def lowered(model: str, shape: tuple[int, int, int]) -> CompiledModel:
    import torch

    from xnorflow.sw.lower import lower
    from xnorflow.sw.models import build_model, make_config

    torch.manual_seed(0)
    net = build_model(make_config(model, "x", shape, [str(i) for i in range(10)]))
    return lower(net)


def main() -> None:
    for layout in ("flat", "image"):
        model = fmnist_mlp(layout)
        print(f"== Fashion-MNIST MLP 784-256-256-10, first layer input "
              f"{model.in_h}x{model.in_w}x{model.in_c} ({layout})")
        report(model)
    for dataset, shape in (("digits", (8, 8, 1)), ("fashion-mnist", (28, 28, 1))):
        for name in ("mlp", "cnn"):
            model = lowered(name, shape)
            layers = ", ".join(f"{lay.kind} {lay.in_h}x{lay.in_w}x{lay.in_c}->{lay.out_c}"
                               for lay in model.layers)
            print(f"== default {name} for {dataset} {shape}, lowered by sw.lower: {layers}")
            report(model)


if __name__ == "__main__":
    main()
