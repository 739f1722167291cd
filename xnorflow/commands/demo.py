"""``xnorflow demo``: the whole flow in one command, into one report folder."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "the whole flow: train, compile, run every backend, compare, synthesise, report"

DESCRIPTION = """\
Train an XNOR-Net on the data set (the Fashion-MNIST MLP preset starts from the committed
best trained model instead; --epochs retrains), compile it for the board's target, run it on
every backend (PyTorch deploy mode, golden model, CPU kernel, Amaranth simulator, Icarus),
compare them bit for bit, synthesise the board's bitstream, and write one report folder:

  OUT/report.md, report.html, report.json   accuracy per backend, agreement, cycles/image,
                                            utilisation, LUTs/RAM/Fmax, images/s, size vs fp32
  OUT/*.png                                 training curve, resources, accuracy per backend
  OUT/checkpoint/, OUT/model/               the trained checkpoint and the compiled model
  OUT/bitstream/                            the bitstream, tool logs and synthesis report
  OUT/compare-software/, compare-hardware/  the xnorflow compare reports

The software backends classify the whole test split; the simulated hardware backends
(thousands of cycles per image in a simulator) classify its first --hw-limit images. The
folder is written atomically: a failed or interrupted demo leaves the old one untouched.
Exits non-zero if any backend disagrees with the golden model on any bit.
"""

EPILOG = """\
examples:
  xnorflow demo                                   # digits MLP on the iCEBreaker (UP5K)
  xnorflow demo -o reports/demo --hw-limit 16     # fewer simulated images, faster
  xnorflow demo --dataset fashion-mnist --model cnn
  xnorflow demo --no-synth --backends golden,cpu,amaranth
"""


def register(subparsers) -> None:
    from xnorflow.demo import DEFAULT_BACKENDS, PRESETS

    p = subparsers.add_parser("demo", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    datasets = sorted({d for d, _ in PRESETS})
    models = sorted({m for _, m in PRESETS})
    p.add_argument("--dataset", default="digits", choices=datasets,
                   help="data set (default: digits, embedded in scikit-learn)")
    p.add_argument("--model", default="mlp", choices=models, help="model (default: mlp)")
    p.add_argument("--data-path", help="folder of the data set's files (default: the usual "
                   "place, e.g. /usr/share/datasets/fashion-mnist)")
    p.add_argument("-o", "--output", metavar="OUT", help="report folder "
                   "(default: reports/demo-<dataset>-<model>)")
    p.add_argument("--epochs", type=int, help="training epochs (default: the preset's)")
    p.add_argument("--limit", type=int, help="test images for the software backends "
                   "(default: the whole test split)")
    p.add_argument("--hw-limit", type=int, default=32, help="test images for the simulated "
                   "hardware backends (default: 32)")
    p.add_argument("--backends", default=",".join(DEFAULT_BACKENDS),
                   help=f"comma-separated (default: {','.join(DEFAULT_BACKENDS)})")
    p.add_argument("--no-synth", action="store_true", help="skip synthesis")
    p.add_argument("--seed", type=int, default=0, help="training and stall seed (default: 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xnorflow.demo import print_summary, run_demo

    out = Path(args.output or f"reports/demo-{args.dataset}-{args.model}")
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    res = run_demo(out, args.dataset, args.model, epochs=args.epochs, limit=args.limit,
                   hw_limit=args.hw_limit, backends=backends, synth=not args.no_synth,
                   seed=args.seed, data_path=args.data_path)
    print_summary(res)
    return 0 if res.ok else 1
