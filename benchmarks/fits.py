"""Which Fashion-MNIST (28x28x1) topologies compile for a target: weights, fits or not.

Each model is built with random weights (the fit does not depend on their values), lowered
and checked with :func:`xnorflow.sw.program.check_fits`, the same check ``xnorflow compile``
makes. Writes benchmarks/results/fits.<target>.md.

    .venv/bin/python benchmarks/fits.py [--target ecp5-85f]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from xnorflow.sw import files
from xnorflow.sw.errors import UserError
from xnorflow.sw.lower import lower
from xnorflow.sw.models import build_model, make_config, parse_widths
from xnorflow.sw.program import check_fits
from xnorflow.sw.targets import get_target

RESULTS = Path(__file__).resolve().parent / "results"
CANDIDATES = [("mlp", w) for w in ("256,256", "512,512", "640,640", "672,672", "768,768",
                                   "1024,1024", "1024,128", "960,256", "512,512,512")] + [
    ("cnn", w) for w in ("32,64:256", "64,128:512", "64,64p,128,128p,192,192p:",
                         "64,64p,128,128p,128p:256", "64,64p,128,128p,256p7:256",
                         "32,32p,64,64p,128,128p:256", "64,64p,128,128p:128",
                         "64,64p,128,128p,256,256p:")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="ecp5-85f")
    args = ap.parse_args(argv)
    target = get_target(args.target)
    lines = [f"# Fashion-MNIST topologies on `{args.target}` ({target.geometry})", "",
             f"Command: `python benchmarks/fits.py --target {args.target}`", "",
             "| model | --widths | binary weights | compiles? |", "|---|---|---|---|"]
    for model, widths in CANDIDATES:
        cfg = make_config(model, "fashion-mnist", (28, 28, 1), [str(i) for i in range(10)],
                          widths=parse_widths(model, widths))
        torch.manual_seed(0)
        net = build_model(cfg)
        bits = sum(b.op.weight.numel() for b in net.blocks)
        try:
            check_fits(lower(net, verify=False), target)
            ok = "yes"
        except UserError as e:
            ok = f"no: {e}"
        lines.append(f"| {model} | `{widths}` | {bits / 1e6:.2f} M | {ok} |")
        print(lines[-1], flush=True)
    files.write_text(RESULTS / f"fits.{args.target}.md", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
