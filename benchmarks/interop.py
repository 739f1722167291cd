"""Brevitas -> QONNX -> xnorflow -> iCEBreaker: the documented interop example, end to end.

1. Train a FINN TFC-style binary MLP with Brevitas on sklearn's digits (8x8, 10 classes):
   8-bit unsigned input quantiser (scale 1/255: the ONNX input is pixel / 255), then
   ``QuantLinear -> BatchNorm1d -> sign`` twice (binary weights and activations, scale 1),
   then a binary ``QuantLinear`` giving the scores.
2. ``export_qonnx`` (TorchScript exporter, dynamo=False) to ``results/interop/tfc-digits.onnx``.
3. ``xnorflow import`` the file; check the imported IR on the whole test split against
   qonnx's ``execute_onnx`` on the exported file (every hidden bit and the class) and against
   Brevitas' own forward (class).
4. ``xnorflow compile --target up5k``; ``xnorflow compare`` golden, cpu, amaranth and icarus
   (bit for bit, on ``--hw-limit`` test images; golden and cpu on the whole split).
5. ``xnorflow synth --board icebreaker`` at the board's default clock (``--no-synth`` skips it).

Every command's output goes to ``benchmarks/results/interop.txt``; the figures to
``benchmarks/results/interop.json``; the synthesis report to ``results/interop/``.

Usage::

    .venv/bin/python benchmarks/interop.py                 # about 10 minutes on 2 cores
    .venv/bin/python benchmarks/interop.py --no-synth --hw-limit 8
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from xnorflow.sw import files

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
OUT = RESULTS / "interop"
WORK = ROOT / "build" / "bench-interop"
sys.path.insert(0, str(ROOT))  # tests/sw/brevitas_nets.py: the same builders the tests use


def tfc(widths=(256, 256), classes=10, in_features=64):
    from tests.sw.brevitas_nets import input_quant, linear, sign

    mods = [*input_quant("u8"), nn.Flatten()]  # 8-bit unsigned, scale 1/255
    n = in_features
    for w in widths:
        mods += [linear(n, w), nn.BatchNorm1d(w), sign()]
        n = w
    mods.append(linear(n, classes))
    return nn.Sequential(*mods)


def train(net, x, y, epochs, lr, batch, seed, log):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    for ep in range(epochs):
        net.train()
        perm = torch.randperm(len(xt), generator=g)
        total = 0.0
        for i in range(0, len(xt), batch):
            idx = perm[i:i + batch]
            out = net(xt[idx])
            out = out.value if hasattr(out, "value") else out
            loss = loss_fn(out, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        log(f"train: epoch {ep + 1}/{epochs}: loss {total / len(xt):.4f}")
    return net.eval()


def cli(args: list[str], log) -> tuple[int, str]:
    """Run ``xnorflow ARGS`` in this process, logging its output."""
    from xnorflow.cli import main

    buf = io.StringIO()
    t0 = time.time()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        rc = main(args)
    text = buf.getvalue()
    log(f"$ xnorflow {' '.join(args)}\n{text.rstrip()}\n(exit {rc}, {time.time() - t0:.1f} s)")
    return rc, text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hw-limit", type=int, default=20,
                    help="test images through amaranth and icarus (default 20)")
    ap.add_argument("--no-synth", action="store_true")
    args = ap.parse_args()

    from tests.sw.brevitas_nets import export
    from xnorflow.sw import golden
    from xnorflow.sw.data import load_dataset
    from xnorflow.sw.ir import CompiledModel
    from xnorflow.sw.qonnx_import import onnx_input, run_onnx

    RESULTS.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    lines: list[str] = []

    def log(msg: str) -> None:
        print(msg, flush=True)
        lines.append(msg)

    t_start = time.time()
    load = os.getloadavg()
    log(f"benchmarks/interop.py {' '.join(sys.argv[1:])}".rstrip())
    log(f"date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; load average at "
        f"start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; cores: {os.cpu_count()}; "
        f"python {platform.python_version()}")
    import brevitas
    import onnxruntime
    import qonnx  # noqa: F401

    log(f"brevitas {brevitas.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"torch {torch.__version__}")

    # 1. train
    ds = load_dataset("digits")
    torch.manual_seed(args.seed)
    net = tfc()
    xtr = onnx_input(ds.x_train)  # pixel / 255, NCHW
    xte = onnx_input(ds.x_test)
    t0 = time.time()
    train(net, xtr, ds.y_train, args.epochs, args.lr, 32, args.seed, log)
    t_train = time.time() - t0
    with torch.no_grad():
        out = net(torch.from_numpy(xte))
        brev = (out.value if hasattr(out, "value") else out).numpy()
    brev_acc = float((brev.argmax(1) == ds.y_test).mean())
    log(f"brevitas: test accuracy {brev_acc:.2%} ({len(ds.y_test)} images), trained in "
        f"{t_train:.0f} s")

    # 2. export
    onnx_path = OUT / "tfc-digits.onnx"
    export(net, (1, 1, 8, 8), onnx_path)
    log(f"export_qonnx -> {onnx_path.relative_to(ROOT)} ({onnx_path.stat().st_size} bytes)")

    # 3. import, and compare with execute_onnx and Brevitas on the whole test split
    imp = WORK / "imported"
    rc, _ = cli(["import", str(onnx_path), "-o", str(imp)], log)
    if rc:
        return rc
    shutil.copy2(imp / "import.json", OUT / "import.json")
    cm = CompiledModel.load(imp)
    g = golden.run(cm, ds.x_test)
    t0 = time.time()
    r = run_onnx(onnx_path, cm, ds.x_test)
    t_onnx = time.time() - t0
    hidden_diff = [int((a != b).sum()) for a, b in zip(r.activations, g.activations, strict=True)]
    hidden_bits = [int(a.size) for a in g.activations]
    cls_onnx = int((r.output.argmax(1) != g.predictions).sum())
    cls_brev = int((brev.argmax(1) != g.predictions).sum())
    logit_err = float(np.abs(r.output - g.logits - cm.meta["logit_bias"]).max())
    golden_acc = float((g.predictions == ds.y_test).mean())
    log(f"golden (imported IR) vs execute_onnx on {len(ds.y_test)} test images: hidden bits "
        f"differing {hidden_diff} of {hidden_bits}, classes differing {cls_onnx}, max |logit "
        f"diff| {logit_err:.3g} (execute_onnx took {t_onnx:.0f} s)")
    log(f"golden vs Brevitas forward: classes differing {cls_brev}; golden accuracy "
        f"{golden_acc:.2%}")

    # 4. compile for up5k, compare the backends
    comp = WORK / "tfc-up5k"
    rc, _ = cli(["compile", str(imp), "--target", "up5k", "-o", str(comp)], log)
    if rc:
        return rc
    rc_sw, _ = cli(["compare", "--model", str(comp), "--backends", "golden,cpu",
                    "--dataset", "digits", "-o", str(WORK / "compare-sw")], log)
    rc_hw, _ = cli(["compare", "--model", str(comp), "--backends", "golden,cpu,amaranth,icarus",
                    "--dataset", "digits", "--limit", str(args.hw_limit),
                    "-o", str(WORK / "compare-hw")], log)
    rep_sw = json.loads((WORK / "compare-sw" / "report.json").read_text())
    rep_hw = json.loads((WORK / "compare-hw" / "report.json").read_text())
    shutil.copy2(WORK / "compare-hw" / "report.md", OUT / "compare-hw.md")
    shutil.copy2(WORK / "compare-sw" / "report.md", OUT / "compare-sw.md")

    # 5. synthesise
    synth = None
    if not args.no_synth:
        sdir = WORK / "bitstream"
        rc_syn, _ = cli(["synth", "--board", "icebreaker", "--model", str(comp),
                         "--out", str(sdir), "-q"], log)
        if rc_syn == 0:
            synth = json.loads((sdir / "report.json").read_text())
            for f in ("report.json", "report.md"):
                shutil.copy2(sdir / f, OUT / f"synth-{f}")
    doc = {
        "command": "benchmarks/interop.py " + " ".join(sys.argv[1:]),
        "load_average_at_start": load, "cores": os.cpu_count(),
        "epochs": args.epochs, "train_s": round(t_train, 1),
        "brevitas_test_accuracy": brev_acc, "golden_test_accuracy": golden_acc,
        "test_images": int(len(ds.y_test)),
        "onnx_vs_golden": {"hidden_bits_differing": hidden_diff, "hidden_bits": hidden_bits,
                           "classes_differing": cls_onnx, "max_abs_logit_diff": logit_err},
        "brevitas_vs_golden_classes_differing": cls_brev,
        "inexact_scales": cm.meta["inexact_scales"],
        "layers": [{"name": ly.name, "kind": ly.kind, "in": [ly.in_h, ly.in_w, ly.in_c],
                    "out_c": ly.out_c, "in_bits": ly.in_bits, "onnx_node": ly.meta["onnx_node"]}
                   for ly in cm.layers],
        "compare_software": {"exit": rc_sw, "exact": rep_sw.get("exact"),
                             "images": rep_sw.get("samples")},
        "compare_hardware": {"exit": rc_hw, "exact": rep_hw.get("exact"),
                             "images": rep_hw.get("samples"),
                             "backends": "golden,cpu,amaranth,icarus"},
        "synth": None if synth is None else {
            k: synth.get(k) for k in ("board", "geometry", "fmax_mhz", "resources", "clock",
                                      "model")},
        "wall_s": round(time.time() - t_start, 1),
    }
    files.write_text(RESULTS / "interop.json", json.dumps(doc, indent=2, default=str) + "\n")
    log(f"wall time {doc['wall_s']:.0f} s")
    files.write_text(RESULTS / "interop.txt", "\n".join(lines) + "\n")
    ok = (rc_sw == 0 and rc_hw == 0 and cls_onnx == 0 and sum(hidden_diff) == 0
          and (args.no_synth or synth is not None))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
