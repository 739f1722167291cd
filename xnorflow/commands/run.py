"""``xnorflow run``: classify a data set split with one backend; accuracy and cycles/image."""

from __future__ import annotations

import argparse

HELP = "classify a data set split with one backend (golden, cpu, amaranth, icarus, board, ...)"

DESCRIPTION = """\
Run a compiled model folder (from `xnorflow compile`) on a data set split with one backend
and print the accuracy; hardware backends (amaranth, icarus, verilator) also print the
accelerator's clock cycles per image and the simulator's speed.

Backends: torch (PyTorch deploy mode: the folder's integer IR run with PyTorch
convolutions; offered for folders compiled from an `xnorflow train` checkpoint, which it
does not read), golden (the NumPy golden model), cpu (fast CPU kernel), amaranth
(Amaranth simulator), icarus and verilator (cocotb on the generated Verilog), board (a
board running the model's bitstream, over the serial port --port). The simulated backends drive the
accelerator through the same host session that talks to a board.
"""

EPILOG = """\
examples:
  xnorflow run --model runs/mlp-up5k --backend golden --dataset digits --split test
  xnorflow run --model runs/mlp-up5k --backend icarus --limit 20
  xnorflow run --model runs/cnn-ecp5 --backend verilator --dataset fashion-mnist -n 100
  xnorflow run --model runs/mlp-up5k --backend amaranth --limit 2 --waves run.vcd
  xnorflow run --model runs/mlp-up5k --backend board --port /dev/ttyUSB1 --limit 100
"""


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="digits",
                   help="digits, fashion-mnist, mnist or cifar10 (default: digits)")
    p.add_argument("--data-path", default=None, help="folder of a file-based data set")
    p.add_argument("--split", default="test", choices=("test", "train"),
                   help="which split to classify (default: test)")
    p.add_argument("--limit", "-n", type=int, default=None, metavar="N",
                   help="only the first N images of the split")


def register(subparsers) -> None:
    p = subparsers.add_parser("run", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", "-m", required=True, metavar="DIR",
                   help="compiled model folder (xnorflow compile -o DIR)")
    p.add_argument("--backend", "-b", default="golden",
                   help="torch, golden, cpu, amaranth, icarus, verilator or board "
                   "(default: golden)")
    add_data_args(p)
    p.add_argument("--waves", metavar="FILE", default=None,
                   help="simulated backends: write a waveform (VCD; FST on icarus)")
    p.add_argument("--seed", type=int, default=0, help="seed of random stream stalls")
    add_board_args(p)
    p.set_defaults(func=run)


def add_board_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", default=None,
                   help="backend board: the board's serial port (or a pyserial URL), "
                   "e.g. /dev/ttyUSB1")
    p.add_argument("--baud", type=int, default=None,
                   help="backend board: baud rate (default: the rate xnorflow synth builds "
                   "the board tops for)")


def load_split(args):
    """``(images, labels, dataset)`` of the requested split, cut to ``--limit``."""
    from xnorflow.sw.data import load_dataset
    from xnorflow.sw.errors import UserError

    ds = load_dataset(args.dataset, args.data_path)
    x, y = (ds.x_test, ds.y_test) if args.split == "test" else (ds.x_train, ds.y_train)
    if args.limit is not None:
        if args.limit < 1:
            raise UserError(f"--limit must be at least 1, not {args.limit}")
        x, y = x[: args.limit], y[: args.limit]
    return x, y, ds


def check_shape(mf, x, dataset: str) -> None:
    from xnorflow.sw.errors import UserError

    want = (mf.model.in_h, mf.model.in_w, mf.model.in_c)
    if tuple(x.shape[1:]) != want:
        raise UserError(f"{mf.path}: the model takes {want} images but {dataset} has "
                        f"{tuple(x.shape[1:])}; use the data set it was trained on")


def run(args) -> int:
    from xnorflow.sim import backends
    from xnorflow.sim.compare import perf_stats

    backends.check_backend(args.backend)
    if args.backend == "board":
        backends.check_board_link(args.port, args.baud)
    mf = backends.load_model(args.model)
    x, y, ds = load_split(args)
    check_shape(mf, x, ds.name)
    out = backends.run(mf, x, args.backend, waves=args.waves, seed=args.seed, port=args.port,
                       baud=args.baud)
    acc = out.accuracy(y)
    print(f"{args.backend}: {ds.name} {args.split}: {len(y)} images, accuracy "
          f"{100 * acc:.2f} % ({int((out.predictions == y).sum())}/{len(y)}), "
          f"wall {out.wall_s:.2f} s")
    perf = perf_stats(mf, out, None)
    if "cycles_per_image" in perf:
        line = (f"{args.backend}: {perf['cycles_per_image']:.1f} cycles/image on "
                f"{mf.target.geometry} (min {perf['cycles_min']}, max {perf['cycles_max']}), "
                f"utilisation {100 * perf['utilisation']:.1f} %")
        if out.sim_cycles and out.info.get("sim_s"):
            line += f", simulator {out.sim_cycles / out.info['sim_s']:.0f} cycles/s"
        print(line)
    if out.waves is not None:
        print(f"{args.backend}: waveform written to {out.waves}")
    return 0
