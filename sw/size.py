"""Size report: how many bits a compiled model's memory images take, against fp32.

Two comparisons, both like for like:

* **weights**: the model has ``N`` binary weights; in fp32 they take ``32 N`` bits, packed
  they take ``N`` bits, so the ratio is exactly 32. The padded packed size (each segment of
  ``C`` channels padded to whole ``W``-bit words, as the accelerator stores them: for the
  model the accelerator runs, :func:`xnorflow.sw.program.hardware_model`, whose first layer
  may read host-side windows packed contiguously) is reported beside it, with its own ratio.
* **whole image**: every bit of every memory image (weights, thresholds, program and any
  other memory, at their stored widths and depths) against the fp32 model, taken as 32 bits
  per weight plus 32 bits per float parameter per output channel. The number of such
  per-channel parameters is ``model.meta["fp32_params"]`` minus the weights when the compiler
  recorded it (the trained model's real parameter count), else 1 per channel (a bias): the
  smallest fp32 model with these layers, so the ratio is never flattered.

Memories are grouped by name: ``weight*`` -> weights, ``thr*`` -> thresholds,
``prog*`` -> program, anything else -> other.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .ir import CompiledModel

CATEGORIES = ("weights", "thresholds", "program", "other")


def memory_category(name: str) -> str:
    """The size-report category of a memory, from its name."""
    n = name.lower()
    if n.startswith("weight") or n.startswith("wgt"):
        return "weights"
    if n.startswith("thr"):
        return "thresholds"
    if n.startswith("prog"):
        return "program"
    return "other"


def _padded_weight_bits(layer, width: int) -> int:
    words_per_seg = -(-layer.in_c // width)
    return layer.out_c * layer.kh * layer.kw * words_per_seg * width


def size_report(model: CompiledModel, memories: list, target: Any) -> dict:
    """Bits of the model's memory images against its fp32 equivalent (see module docstring).

    ``memories`` are :class:`~xnorflow.sw.images.MemoryImage` (anything with ``name``,
    ``width`` and ``depth``); ``target`` gives the word width ``W`` for padded packing.
    """
    from .program import hardware_model

    width = int(target.width)
    hw, windows = hardware_model(model, target)
    layers = []
    n_weights = n_thresholds = n_channels = padded = 0
    for layer, hw_layer in zip(model.layers, hw.layers, strict=True):
        nw = int(np.asarray(layer.weights).size)
        nt = int(np.asarray(layer.thresholds).size) if layer.output == "threshold" else 0
        pb = _padded_weight_bits(hw_layer, width)
        layers.append(
            {
                "name": layer.name,
                "kind": layer.kind,
                "shape": [layer.out_c, layer.kh, layer.kw, layer.in_c],
                "binary_weights": nw,
                "weight_bits_fp32": 32 * nw,
                "weight_bits_packed": nw,
                "weight_bits_packed_padded": pb,
                "thresholds": nt,
                "accumulator_bits": layer.acc_bits,
            }
        )
        n_weights += nw
        n_thresholds += nt
        n_channels += layer.out_c
        padded += pb

    recorded = model.meta.get("fp32_params") if isinstance(model.meta, dict) else None
    if isinstance(recorded, int) and recorded >= n_weights:
        fp32_params = recorded
        baseline = "fp32 parameters of the trained model (model.meta['fp32_params'])"
    else:
        fp32_params = n_weights + n_channels
        baseline = "32-bit float weights plus one 32-bit bias per output channel"

    mems = []
    by_cat = dict.fromkeys(CATEGORIES, 0)
    for m in memories:
        bits = int(m.width) * int(m.depth)
        cat = memory_category(m.name)
        by_cat[cat] += bits
        mems.append(
            {"name": m.name, "category": cat, "width": int(m.width), "depth": int(m.depth),
             "bits": bits}
        )
    total = sum(by_cat.values())
    fp32_bits = 32 * fp32_params
    return {
        "target": target.name,
        "geometry": f"{target.rows}x{target.cols}x{target.width}",
        "word_width": width,
        "input_windows": bool(windows),
        "layers": layers,
        "binary_weights": n_weights,
        "weight_bits_fp32": 32 * n_weights,
        "weight_bits_packed": n_weights,
        "weight_ratio": (32 * n_weights) / n_weights if n_weights else None,
        "weight_bits_packed_padded": padded,
        "weight_ratio_padded": (32 * n_weights) / padded if padded else None,
        "thresholds": n_thresholds,
        "fp32_params": fp32_params,
        "fp32_model_bits": fp32_bits,
        "fp32_baseline": baseline,
        "memories": mems,
        "image_bits": {**by_cat, "total": total},
        "image_ratio": fp32_bits / total if total else None,
    }


def _kib(bits: int) -> str:
    return f"{bits / 8 / 1024:,.1f} KiB"


def format_size_markdown(report: dict) -> str:
    """The size report as a Markdown page (``size.md``; also printed by ``xnorflow compile``)."""
    r = report
    lines = [
        f"# Size report: target {r['target']} ({r['geometry']})",
        "",
        "| layer | kind | weights (out, kh, kw, in) | binary weights | fp32 bits | packed bits "
        f"| packed, padded to {r['word_width']}-bit words | thresholds | acc bits |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for lay in r["layers"]:
        lines.append(
            f"| {lay['name']} | {lay['kind']} | {'x'.join(map(str, lay['shape']))} "
            f"| {lay['binary_weights']:,} | {lay['weight_bits_fp32']:,} "
            f"| {lay['weight_bits_packed']:,} | {lay['weight_bits_packed_padded']:,} "
            f"| {lay['thresholds']:,} | {lay['accumulator_bits']} |"
        )
    lines += ["", "| memory | category | width | depth | bits |", "|---|---|---:|---:|---:|"]
    for m in r["memories"]:
        lines.append(
            f"| {m['name']} | {m['category']} | {m['width']} | {m['depth']:,} | {m['bits']:,} |"
        )
    ib = r["image_bits"]
    wr = r["weight_ratio"]
    wrp = r["weight_ratio_padded"]
    ir = r["image_ratio"]
    lines += [
        "",
        f"- weights: {r['binary_weights']:,} binary weights = {r['weight_bits_packed']:,} bits "
        f"packed vs {r['weight_bits_fp32']:,} bits fp32: "
        f"{wr:.2f}x smaller" if wr else "- weights: none",
        f"- weights packed and padded to {r['word_width']}-bit words"
        f"{' (first layer on host-side windows)' if r.get('input_windows') else ''}: "
        f"{r['weight_bits_packed_padded']:,} bits ({_kib(r['weight_bits_packed_padded'])}), "
        f"{wrp:.2f}x smaller than fp32" if wrp else "- padded weights: none",
        f"- image: weights {ib['weights']:,} + thresholds {ib['thresholds']:,} + program "
        f"{ib['program']:,} + other {ib['other']:,} = {ib['total']:,} bits ({_kib(ib['total'])})",
        f"- fp32 model: {r['fp32_params']:,} parameters = {r['fp32_model_bits']:,} bits "
        f"({_kib(r['fp32_model_bits'])}; {r['fp32_baseline']})",
        f"- whole image: {ir:.2f}x smaller than the fp32 model" if ir else "- whole image: empty",
        "",
    ]
    return "\n".join(lines)


def summary_line(report: dict) -> str:
    """One line: total image bits and the ratios."""
    ib = report["image_bits"]["total"]
    return (
        f"{ib:,} bits ({_kib(ib)}) of memory images for {report['target']} "
        f"({report['geometry']}); weights {report['weight_ratio'] or 0:.1f}x "
        f"(padded {report['weight_ratio_padded'] or 0:.1f}x), whole image "
        f"{report['image_ratio'] or 0:.1f}x smaller than fp32"
    )
