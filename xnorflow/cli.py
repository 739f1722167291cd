"""The ``xnorflow`` command line: train, teacher, compile, run, compare, synth, asic, sweep,
board, demo, import, export."""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .commands import COMMANDS, MODULES

EPILOG = """\
The whole flow in one command:   xnorflow demo
Step by step:
  xnorflow train --model mlp --dataset digits -o runs/mlp
  xnorflow compile runs/mlp --target up5k -o runs/mlp-up5k
  xnorflow compare --model runs/mlp-up5k --backends golden,cpu,amaranth,icarus
  xnorflow synth --board icebreaker --model runs/mlp-up5k
From Brevitas/QONNX and back (pip install 'xnorflow[interop]'):
  xnorflow import tfc.onnx --input-shape 8x8x1 -o runs/tfc && xnorflow compile runs/tfc ...
  xnorflow export runs/mlp-up5k --qonnx mlp.onnx
Each subcommand has its own --help with examples.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xnorflow",
        description="Binary neural networks from PyTorch to an open-toolchain FPGA bitstream, "
        "bit-exact at every step.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"xnorflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f".commands.{MODULES.get(name, name)}", __package__).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from xnorflow.sw.errors import UserError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"xnorflow {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"xnorflow {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
