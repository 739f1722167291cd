"""Size report: packed weights exactly 32x smaller than fp32; whole image >= 25x (FMNIST MLP)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xnorflow.sw.images import MemoryImage, write_model_folder
from xnorflow.sw.ir import CompiledModel, Layer
from xnorflow.sw.program import build_memories
from xnorflow.sw.size import format_size_markdown, memory_category, size_report, summary_line
from xnorflow.sw.targets import TARGETS

from .model_folders import mlp

FMNIST_MLP = (784, 256, 256, 10)


def image_input(model: CompiledModel, h: int, w: int, c: int) -> CompiledModel:
    """The same MLP reading the image map (as sw.lower emits it): first layer 28x28x1 dense."""
    first = model.layers[0]
    new = Layer(**{**first.__dict__})
    new.in_h, new.in_w, new.in_c, new.kh, new.kw = h, w, c, h, w
    new.weights = first.weights.reshape(first.out_c, h, w, c)
    out = CompiledModel(h, w, c, [new, *model.layers[1:]], classes=model.classes)
    out.validate()
    return out


@pytest.fixture(scope="module", params=[(t, lay) for t in ("sim", "ecp5-85f", "up5k")
                                        for lay in ("flat", "image")])
def fmnist(request):
    """The Fashion-MNIST MLP (hand-built IR of that shape) and its real memory images."""
    target_name, layout = request.param
    model = mlp(FMNIST_MLP, in_bits=8)
    if layout == "image":
        model = image_input(model, 28, 28, 1)
    tgt = TARGETS[target_name]
    mems = build_memories(model, tgt)
    return model, tgt, mems, size_report(model, mems, tgt)


def test_packed_weights_are_exactly_32x_smaller(fmnist):
    _, _, _, r = fmnist
    n = 784 * 256 + 256 * 256 + 256 * 10
    assert r["binary_weights"] == n
    assert r["weight_bits_packed"] == n
    assert r["weight_bits_fp32"] == 32 * n
    assert r["weight_ratio"] == 32.0
    # padded to W-bit words per segment (or per host-side window for the 28x28x1 first
    # layer, which the accelerator runs as one 784-bit window): 784 -> ceil(784 / W) words
    w = r["word_width"]
    assert r["weight_bits_packed_padded"] == (256 * -(-784 // w) * w + 256 * -(-256 // w) * w
                                              + 10 * -(-256 // w) * w)
    assert r["input_windows"] == (fmnist[0].in_h == 28)
    assert [lay["binary_weights"] for lay in r["layers"]] == [784 * 256, 256 * 256, 2560]


def test_whole_image_is_at_least_25x_smaller_for_the_fashion_mnist_mlp(fmnist):
    _, _, mems, r = fmnist
    assert {m.name for m in mems} >= {"weights", "thresholds", "program"}
    total = sum(m.width * m.depth for m in mems)
    assert r["image_bits"]["total"] == total
    assert r["image_bits"]["weights"] + r["image_bits"]["thresholds"] + r["image_bits"][
        "program"] + r["image_bits"]["other"] == total
    assert r["fp32_model_bits"] == 32 * (r["binary_weights"] + 256 + 256 + 10)
    assert r["image_ratio"] == r["fp32_model_bits"] / total
    assert r["image_ratio"] >= 25, format_size_markdown(r)


def test_recorded_fp32_parameter_count_is_used(fmnist):
    model, tgt, mems, r = fmnist
    model.meta["fp32_params"] = r["binary_weights"] + 4 * 522
    try:
        r2 = size_report(model, mems, tgt)
    finally:
        del model.meta["fp32_params"]
    assert r2["fp32_model_bits"] == 32 * (r["binary_weights"] + 4 * 522)
    assert "trained model" in r2["fp32_baseline"]


def test_memory_categories():
    assert [memory_category(n) for n in ("weights", "weights_bank3", "thresholds", "program",
                                         "act0")] == ["weights", "weights", "thresholds",
                                                      "program", "other"]
    r = size_report(mlp(), [MemoryImage("act0", 8, np.zeros(3, np.uint64), "")], TARGETS["sim"])
    assert r["image_bits"] == {"weights": 0, "thresholds": 0, "program": 0, "other": 24,
                               "total": 24}


def test_report_is_written_into_the_folder(tmp_path, fmnist):
    model, tgt, mems, r = fmnist
    write_model_folder(tmp_path / "o", model, tgt, mems)
    assert (tmp_path / "o" / "size.md").read_text().startswith(
        f"# Size report: target {tgt.name} ({tgt.geometry})")
    assert json.loads((tmp_path / "o" / "size.json").read_text()) == r
    md = (tmp_path / "o" / "size.md").read_text()
    assert md == format_size_markdown(r)
    assert "32.00x smaller" in md and f"{r['image_ratio']:.2f}x smaller than the fp32" in md
    padded = f"{256 * -(-784 // tgt.width) * tgt.width:,}"
    shape = "256x28x28x1" if model.in_h == 28 else "256x1x1x784"
    assert f"fc1 | dense | {shape} | 200,704 | 6,422,528 | 200,704 | {padded} | 256 |" in md
    assert f"{r['image_ratio']:.1f}x smaller than fp32" in summary_line(r)
