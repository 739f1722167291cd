"""``xnorflow board``: load a compiled model into a board over UART and classify images."""

from __future__ import annotations

import argparse

EXAMPLES = """\
examples:
  xnorflow board --port /dev/ttyUSB1 --model runs/mlp-up5k
  xnorflow board --port /dev/ttyUSB1 --model runs/mlp-up5k --count 200 --baud 1000000
  xnorflow board --port /dev/ttyUSB1 --model runs/mlp-up5k --no-load   # already loaded

The board must run a bitstream from `xnorflow synth` for the model's target geometry
(iCEBreaker: the FTDI's second port, usually /dev/ttyUSB1). Every board answer is checked
against the golden model; the command fails if any image disagrees.
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
    p.add_argument("--baud", type=int, default=1_000_000, help="baud rate (default 1000000)")
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


async def classify_on_board(transport, memories, target, pixels, *, load: bool = True):
    """Connect, (load), classify every image; returns ``(classes, scores, seconds)``."""
    import time

    from xnorflow.hw.driver import AcceleratorDriver
    from xnorflow.sw.errors import UserError

    drv = AcceleratorDriver(transport)
    st = await drv.connect()
    if (st.rows, st.cols, st.width) != (target.rows, target.cols, target.width):
        raise UserError(f"the board runs geometry {st.geometry}, the model was compiled for "
                        f"{target.geometry} ({target.name}); rebuild or recompile")
    if load:
        await drv.load(memories)
    else:
        from xnorflow.sw.program import decode_program

        drv.header, _ = decode_program(next(m for m in memories if m.name == "program").words)
    classes, scores = [], []
    t0 = time.perf_counter()
    for px in pixels:
        c, s = await drv.classify(px)
        classes.append(c)
        scores.append(s)
    return classes, scores, time.perf_counter() - t0


def run(args) -> int:
    import asyncio

    import numpy as np

    from xnorflow.hw.serial_transport import SerialTransport
    from xnorflow.sw import golden
    from xnorflow.sw.images import load_model_folder, target_from_record

    manifest, model, memories = load_model_folder(args.model)
    target = target_from_record(manifest["target"])
    pixels, labels = _images(model, args.dataset, args.count)
    with SerialTransport(args.port, args.baud, timeout=args.timeout) as link:
        classes, scores, secs = asyncio.run(
            classify_on_board(link, memories, target, pixels, load=not args.no_load))
    gold = golden.run(model, pixels, width=target.width)
    agree_cls = int(np.sum(np.array(classes) == gold.predictions))
    agree_scores = sum(list(map(int, s)) == list(map(int, g))
                       for s, g in zip(scores, gold.scores, strict=True))
    acc = float(np.mean(np.array(classes) == labels))
    n = len(pixels)
    print(f"{n} images on {args.port}: class agrees with golden {agree_cls}/{n}, scores agree "
          f"{agree_scores}/{n}; accuracy {acc:.3f}; {n / secs:.1f} images/s over the link")
    return 0 if agree_cls == n and agree_scores == n else 1
