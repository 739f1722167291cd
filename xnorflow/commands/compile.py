"""``xnorflow compile``: a trained checkpoint -> integer IR -> memory images for one target."""

from __future__ import annotations

import argparse
import sys

HELP = "compile a trained checkpoint into memory images for an accelerator target"

DESCRIPTION = """\
Lower a checkpoint written by `xnorflow train -o DIR` to the integer IR (or read the IR of a
folder written by `xnorflow import`, or of another compiled folder), check that it fits
the target's memories (nothing is written if it does not), build the weight, threshold and
program images and write them, with the IR and a size report, to a new folder:

  OUT_DIR/manifest.json           format version, target geometry, sha256 of every file
  OUT_DIR/<memory>.hex / .bin     each memory as $readmemh text and little-endian binary
  OUT_DIR/model.json, model.npz   the IR (golden and CPU backends run the same folder)
  OUT_DIR/size.json, size.md      bits of weights, thresholds and program vs fp32

The folder is written atomically; an existing OUT_DIR is replaced only with --force.
The format is described in docs/memory-images.md.
"""

EPILOG = """\
examples:
  xnorflow compile runs/mlp --target up5k -o runs/mlp-up5k
  xnorflow compile runs/cnn --target ecp5-85f -o runs/cnn-ecp5 --force
  xnorflow compile runs/mlp --target sim -o runs/mlp-sim      # no memory limits
  xnorflow compile runs/cnn --target ecp5-85f --max-batch 1 -o runs/cnn-rt  # one image/run
  xnorflow compile runs/tfc --target up5k -o runs/tfc-up5k   # from xnorflow import
"""


def register(subparsers) -> None:
    from xnorflow.sw.targets import TARGETS

    p = subparsers.add_parser(
        "compile",
        help=HELP,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT_DIR",
                   help="folder written by xnorflow train (or its checkpoint.pt), or a model "
                   "folder holding an IR (model.json: xnorflow import, or a compiled folder)")
    p.add_argument(
        "--target",
        "-t",
        default="up5k",
        help=f"accelerator target: {', '.join(TARGETS)} (default: up5k; sim has no memory "
        "limits)",
    )
    p.add_argument("-o", "--output", metavar="OUT_DIR", required=True, help="folder to write")
    p.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")
    p.add_argument("--max-batch", type=int, default=None, metavar="N",
                   help="images one run may take, 1..R (default: the most that fit: the "
                   "fewest cycles per image in batches; 1 for one image per run, where a "
                   "target with a weight word per row, ecp5-85f, splits dense layers across "
                   "the rows or spreads their column groups over them, and a conv layer's "
                   "where its last tile of pixels would leave rows idle: the fewest cycles for "
                   "one image)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xnorflow.sw.compiler import compile_checkpoint
    from xnorflow.sw.size import format_size_markdown, summary_line

    manifest, size, memories = compile_checkpoint(args.checkpoint, args.target, args.output,
                                                  args.force, max_batch=args.max_batch)
    if not args.quiet:
        print(format_size_markdown(size))
        _print_mappings(manifest["model"]["layers"], memories)
    n_layers = len(manifest["model"]["layers"])
    print(
        f"compiled {args.checkpoint} -> {args.output}: {n_layers} layers, "
        f"{len(manifest['memories'])} memories, {summary_line(size)}"
    )
    sys.stdout.flush()
    return 0


def _print_mappings(names: list[str], memories: list) -> None:
    """One line: how each layer uses the array's rows (``program.mapping``: plain, or on a
    target with a weight word per row, ksplit / spread), decoded from the program written."""
    from xnorflow.sw.program import decode_memories, layer_mappings

    header, descs = decode_memories(memories)
    print(f"mapping per layer, program for {header['max_batch']} image(s) per run "
          "(docs/program.md): " + ", ".join(
              f"{n} {m}" for n, m in zip(names, layer_mappings(descs), strict=True)))
