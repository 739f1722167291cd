"""``xnorflow board``: load a compiled model into a board over UART and classify images.

A thin command over the ``board`` backend (:func:`xnorflow.sim.backends.run_board`, the
host link's session over a serial port), checked against the golden model.
"""

from __future__ import annotations

import argparse

EXAMPLES = """\
examples:
  xnorflow board --port /dev/ttyUSB1 --model runs/mlp-up5k
  xnorflow board --port /dev/ttyUSB1 --model runs/mlp-up5k --count 200 --baud 1000000
  xnorflow board --port /dev/ttyUSB1 --model runs/mlp-up5k --no-load   # already loaded

The board must run a bitstream from `xnorflow synth` for the model's target geometry
(iCEBreaker: the FTDI's second port, usually /dev/ttyUSB1). Every board answer is checked
against the golden model; the command fails if any image disagrees. To compare hidden
layers too, or against other backends: xnorflow compare --backends golden,board --port ...
"""


def register(sub) -> None:
    p = sub.add_parser(
        "board",
        help="classify images on a real board over UART (same driver as the RTL tests)",
        description="Load a compiled model into an FPGA board running the xnorflow bitstream "
        "and classify test images, checking each result against the golden model.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--port", required=True, help="serial port (or pyserial URL)")
    p.add_argument("--model", required=True, help="compiled model folder (xnorflow compile)")
    p.add_argument("--baud", type=int, default=None,
                   help="baud rate (default: the rate xnorflow synth builds the model's board "
                   "top with, e.g. icebreaker 3000000)")
    p.add_argument("--batch", type=int, default=None,
                   help="images per START (default: the program's max_batch, the fastest)")
    p.add_argument("--count", type=int, default=20, help="test images to classify (default 20)")
    p.add_argument("--dataset", default=None,
                   help="data set of the test images (default: the model's, from its meta)")
    p.add_argument("--no-load", action="store_true", help="do not write the memory images")
    p.add_argument("--timeout", type=float, default=2.0, help="read timeout in seconds")
    p.set_defaults(func=run)


def _images(model, dataset: str | None, count: int):
    import numpy as np

    from xnorflow.sw.data import load_dataset
    from xnorflow.sw.errors import UserError

    name = dataset or model.meta.get("dataset")
    if not name:
        if (model.in_h, model.in_w, model.in_c) == (8, 8, 1):
            name = "digits"
        else:
            raise UserError("the model does not name its data set; pass --dataset")
    ds = load_dataset(name)
    if ds.shape != (model.in_h, model.in_w, model.in_c):
        raise UserError(f"data set {name} has images {ds.shape}, the model expects "
                        f"{(model.in_h, model.in_w, model.in_c)}")
    n = min(count, len(ds.x_test))
    return np.asarray(ds.x_test[:n]), np.asarray(ds.y_test[:n])


def run(args) -> int:
    import numpy as np

    from xnorflow.sim import backends
    from xnorflow.sw import golden

    mf = backends.load_model(args.model)
    pixels, labels = _images(mf.model, args.dataset, args.count)
    from xnorflow.sw.errors import UserError
    from xnorflow.sw.program import decode_memories

    max_batch = decode_memories(mf.memories)[0]["max_batch"]
    batch = max_batch if args.batch is None else args.batch
    if not 1 <= batch <= max_batch:
        raise UserError(f"--batch {args.batch}: this program runs 1..{max_batch} images per "
                        "START (max_batch)")
    out = backends.run_board(mf, pixels, port=args.port, baud=args.baud, timeout=args.timeout,
                             read_hidden=False, load=not args.no_load, progress=False,
                             batch=batch, stream=True)
    gold = golden.run(mf.model, pixels, width=mf.target.width)
    agree_cls = int(np.sum(out.predictions == gold.predictions))
    agree_scores = int(np.sum(np.all(out.scores == gold.scores, axis=1)))
    acc = float(np.mean(out.predictions == labels))
    n = len(pixels)
    print(f"{n} images on {args.port}: class agrees with golden {agree_cls}/{n}, scores agree "
          f"{agree_scores}/{n}; accuracy {acc:.3f}; "
          f"{n / out.info['classify_s']:.1f} images/s over the link at {out.info['baud']:,} "
          f"baud, {batch} per START")
    return 0 if agree_cls == n and agree_scores == n else 1
