"""``xnorflow teacher``: train a float CNN teacher and write its logits for distillation."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """\
examples:
  xnorflow teacher --dataset fashion-mnist -o runs/teacher.npy
  xnorflow train --model mlp --dataset fashion-mnist --widths 512,512 \\
      --teacher runs/teacher.npy --kd-alpha 0.7 -o runs/kd

Writes OUT (a .npy array of the teacher's logits for every training image, float32
(N, classes)) and OUT.json (its test accuracy, epochs, device, time). The teacher is a float
model and is never deployed; it only gives the binary student softer targets.
"""


def register(sub) -> None:
    p = sub.add_parser("teacher", help="train a float CNN teacher for knowledge distillation",
                       description="Train a small float CNN (xnorflow.sw.teacher.FloatCNN) and "
                       "write its logits for the training images, the targets that "
                       "`xnorflow train --teacher` distils into a binary network.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion-mnist",
                   help="digits, fashion-mnist, mnist, cifar10 (default fashion-mnist)")
    p.add_argument("--data-path", default=None, help="folder with the data set files")
    p.add_argument("--epochs", type=int, default=12, help="epochs (default 12)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("-o", "--out", required=True, type=Path, help="logits file to write (.npy)")
    p.add_argument("--force", action="store_true", help="replace OUT (and OUT.json) if it exists")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from xnorflow.sw.data import load_dataset
    from xnorflow.sw.errors import UserError
    from xnorflow.sw.teacher import train_teacher
    from xnorflow.sw.train import check_common

    check_common(epochs=args.epochs, batch=args.batch, lr=args.lr, seed=args.seed,
                 threads=args.threads)
    out = args.out
    if out.is_dir():
        raise UserError(f"{out}: is a folder; give a file name such as teacher.npy")
    if out.exists() and not args.force:
        raise UserError(f"{out}: already exists; pass --force to replace it")
    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset, args.data_path)
    doc = train_teacher(data, args.out, epochs=args.epochs, batch=args.batch, lr=args.lr,
                        seed=args.seed, device=args.device)
    print(f"wrote {args.out} and {args.out}.json: teacher test accuracy "
          f"{100 * doc['test_acc']:.2f} %")
    return 0
