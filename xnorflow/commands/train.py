"""``xnorflow train``: train a binary network and report float-sim and deploy accuracy."""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLES = """\
examples:
  xnorflow train --model mlp --dataset digits -o runs/mlp
  xnorflow train --model mlp --dataset digits --in-bits 1 -o runs/mlp-binary-input
  xnorflow train --model mlp --dataset fashion-mnist --widths 256,256 --epochs 20 -o runs/fm
  xnorflow train --model cnn --dataset fashion-mnist --widths 32,64:256 -o runs/cnn
  xnorflow train --model mlp --dataset digits --mode dorefa --act-bits 2 -o runs/dorefa2
  xnorflow train --model mlp --dataset digits --beta -o runs/beta      # beta dropped at deploy
  xnorflow train -o runs/mlp --resume --epochs 40                      # continue a run
  xnorflow train --model mlp --dataset digits -o runs/mlp --force      # replace a run
  xnorflow train --model mlp --dataset digits --nproc 2 -o runs/ddp    # DDP, 2 processes
  xnorflow train --model cnn --dataset fashion-mnist --widths 64,64p,128,128p,256p4:256 \
      --device cuda --epochs 100 -o runs/vgg                              # VGG-style, on a GPU
  xnorflow teacher --dataset fashion-mnist -o runs/teacher.npy           # float teacher, then
  xnorflow train --model mlp --dataset fashion-mnist --widths 512,512 \
      --teacher runs/teacher.npy --kd-alpha 0.7 -o runs/kd                 # distillation

Writes OUT/checkpoint.pt (atomic), OUT/config.json, OUT/metrics.json (per-epoch history,
final float-sim and deploy accuracy) and OUT/curve.png. An existing run in OUT is refused
unless --resume continues it or --force replaces it. Lower it with
`xnorflow compile OUT --target up5k -o OUT-up5k`.
"""


#: --kd-alpha when --teacher is given without it.
KD_ALPHA = 0.7


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a binary network (XNOR-Net, BNN, DoReFa, BWN)",
        description="Train a binary neural network with PyTorch and report its float-sim "
        "accuracy and its deploy-mode accuracy (the integer semantics the compiler and the "
        "accelerator use).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default="mlp", choices=("mlp", "cnn"), help="architecture")
    p.add_argument("--dataset", default="digits",
                   help="digits (built in), fashion-mnist, mnist, cifar10 (default: digits)")
    p.add_argument("--data-path", default=None,
                   help="folder with the data set files (fashion-mnist default: "
                   "/usr/share/datasets/fashion-mnist)")
    p.add_argument("--mode", default="xnor", choices=("xnor", "bnn", "dorefa", "bwn"),
                   help="binarisation scheme (default: xnor)")
    p.add_argument("--epochs", type=int, default=30,
                   help="epochs (default 30; benchmarks/accuracy.py uses 60 on digits)")
    p.add_argument("--batch", type=int, default=32, help="global batch size (default 32)")
    p.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (default 0.01)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--widths", default=None,
                   help="hidden widths: mlp '256,256'; cnn 'CONV,...:DENSE,...', a conv token "
                   "being CHANNELS[kK][sS][p[P]] (kernel K, default 3; stride S; p = 2x2 "
                   "max-pool after it, pP = PxP), e.g. 64,64p,128,128p:512; plain integers "
                   "(32,64:256) pool after every conv (docs/training.md)")
    p.add_argument("--in-bits", type=int, default=8,
                   help="bits of the first layer's input pixels, 1..8 (default 8)")
    p.add_argument("--act-bits", type=int, default=2,
                   help="DoReFa activation bits: 1, 2, 4 or 8 (default 2; dorefa only)")
    p.add_argument("--beta", action="store_true",
                   help="XNOR-Net input scaling K during training (dropped at deploy)")
    p.add_argument("--ste", default="approxsign", choices=("hardtanh", "approxsign"),
                   help="straight-through estimator for sign (default approxsign, Bi-Real)")
    p.add_argument("--augment", type=int, default=0, metavar="PIXELS",
                   help="shift training images randomly by up to PIXELS (default 0)")
    p.add_argument("--relu", action="store_true", help="ReLU after each binary conv/dense")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in OUT (its config.json wins over model flags)")
    p.add_argument("--force", action="store_true",
                   help="replace the run in OUT (kept until the new run has finished); "
                   "without --force or --resume an existing run is refused")
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when torch sees a GPU, else CPU), cpu, cuda or cuda:N; the "
                   "data set is kept on the device")
    p.add_argument("--nproc", type=int, default=1,
                   help="processes for DistributedDataParallel: NCCL, one GPU each, on CUDA; "
                   "gloo on the CPU")
    p.add_argument("--bn-momentum", type=float, default=0.1,
                   help="BatchNorm running-average momentum (default 0.1)")
    p.add_argument("--weight-decay", type=float, default=0.0,
                   help="Adam weight decay on the latent weights (default 0)")
    p.add_argument("--label-smoothing", type=float, default=0.0,
                   help="cross-entropy label smoothing (default 0)")
    p.add_argument("--teacher", type=Path, default=None, metavar="LOGITS.npy",
                   help="float teacher logits of the training images (xnorflow teacher) for "
                   "knowledge distillation")
    p.add_argument("--kd-alpha", type=float, default=None,
                   help=f"weight of the distillation term with --teacher (default {KD_ALPHA})")
    p.add_argument("--kd-temp", type=float, default=None,
                   help="distillation temperature (default 4)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per process (default 1: the machine is shared)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from xnorflow.sw.errors import UserError
    from xnorflow.sw.models import parse_widths
    from xnorflow.sw.train import check_common, train

    check_common(epochs=args.epochs, batch=args.batch, lr=args.lr, seed=args.seed,
                 nproc=args.nproc, threads=args.threads)
    if args.teacher is None:
        for flag, v in (("--kd-alpha", args.kd_alpha), ("--kd-temp", args.kd_temp)):
            if v is not None:
                raise UserError(f"{flag} {v}: needs --teacher LOGITS.npy (distillation)")
    kd = {"kd_alpha": 0.0 if args.teacher is None else
          (KD_ALPHA if args.kd_alpha is None else args.kd_alpha)}
    if args.kd_temp is not None:
        kd["kd_temp"] = args.kd_temp
    torch.set_num_threads(args.threads)
    config = {"model": args.model, "dataset": args.dataset, "mode": args.mode,
              "widths": parse_widths(args.model, args.widths), "in_bits": args.in_bits,
              "act_bits": args.act_bits, "beta": args.beta, "ste": args.ste,
              "relu": args.relu}
    metrics = train(config, args.out, epochs=args.epochs, batch=args.batch, lr=args.lr,
                    seed=args.seed, resume=args.resume, nproc=args.nproc,
                    data_path=args.data_path, progress=not args.quiet, augment=args.augment,
                    device=args.device, bn_momentum=args.bn_momentum,
                    weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
                    teacher=args.teacher, **kd, force=args.force)
    print(f"wrote {args.out}/checkpoint.pt, config.json, metrics.json")
    return 0 if metrics else 1
