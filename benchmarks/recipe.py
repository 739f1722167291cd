"""Recipe ablation for the Fashion-MNIST MLP goal (docs/training.md): width, epochs, BN momentum,
label smoothing, knowledge distillation from a float CNN teacher.

Each run trains one configuration with :func:`xnorflow.sw.train.train` (seed 0, Adam +
cosine, 8-bit first layer, approxsign STE), checks it compiles for ``ecp5-85f`` and records
float-sim and deploy accuracy on the whole test set (deploy = the integer IR; train() checks
that every prediction agrees with float-sim). Runs already in the results JSON are skipped,
so the script can be resumed or extended with ``--only``.

    .venv/bin/python benchmarks/recipe.py                  # every run (hours on 2 cores)
    .venv/bin/python benchmarks/recipe.py --only w512-e20  # one run
    .venv/bin/python benchmarks/recipe.py --teacher-only   # just the float teacher

Writes benchmarks/results/recipe.fashion-mlp.json / .md, the teacher's logits to
runs/teacher-fashion-cnn.npy and each run's training folder to runs/recipe/NAME (both
git-ignored; the teacher's accuracy goes into the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

from xnorflow.sw import files
from xnorflow.sw.data import load_dataset
from xnorflow.sw.lower import lower_checkpoint
from xnorflow.sw.program import check_fits
from xnorflow.sw.targets import get_target
from xnorflow.sw.teacher import train_teacher
from xnorflow.sw.train import train

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
STEM = "recipe.fashion-mlp"
TEACHER = ROOT / "runs" / "teacher-fashion-cnn.npy"
KEEP = ROOT / "runs" / "recipe"
TEACHER_EPOCHS = 12
TARGET = "ecp5-85f"

BASE_CFG = {"model": "mlp", "dataset": "fashion-mnist", "mode": "xnor", "in_bits": 8,
            "ste": "approxsign"}
BASE_HP = {"epochs": 20, "batch": 64, "lr": 0.005}


def runs() -> list[dict]:
    """The ablation, in the order it was run (each changes one thing from its parent)."""
    def r(name, widths, note, **hp):
        return {"name": name, "cfg": {**BASE_CFG, "widths": widths}, "hp": {**BASE_HP, **hp},
                "note": note}
    kd = {"teacher": "TEACHER", "kd_alpha": 0.7, "kd_temp": 4.0}
    return [
        r("w512-e40-kd", [512, 512], "512,512 (fits ecp5-85f, not up5k), distillation from "
          "the float CNN teacher (alpha 0.7, T 4), 40 epochs", epochs=40, **kd),
        r("w512-e10", [512, 512], "512,512, 10 epochs, no distillation", epochs=10),
        r("w512-e10-kd", [512, 512], "512,512, 10 epochs, distillation", epochs=10, **kd),
        r("w1024x128-e10-kd", [1024, 128], "wide first layer, narrow second (fits ecp5-85f), "
          "10 epochs, distillation", epochs=10, **kd),
        r("w512-e10-kd-bnm01", [512, 512], "as w512-e10-kd, BN momentum 0.01 instead of 0.1",
          epochs=10, bn_momentum=0.01, **kd),
        r("w512-e40", [512, 512], "as w512-e40-kd without distillation (added after w512-e10 "
          "matched w512-e10-kd)", epochs=40),
        r("w512-e10-kd-ls", [512, 512], "as w512-e10-kd, label smoothing 0.1", epochs=10,
          label_smoothing=0.1, **kd),
        r("w512-e40-kd-s1", [512, 512], "w512-e40-kd with seed 1 (initial weights and data "
          "order; the same teacher)", epochs=40, seed=1, **kd),
    ]


def markdown(doc: dict) -> str:
    m = doc["meta"]
    lines = ["# Recipe ablation: Fashion-MNIST MLP (goal >= 89 % deploy, compiles for ecp5-85f)",
             "", f"Command of the last invocation: `{m['command']}` (runs already in the JSON "
             "are skipped, so the table gathers the runs of every invocation, in the order "
             "they ran)  ", f"Host {m['host']}, torch threads "
             f"{m['threads']}; every run is seed 0 unless its name ends in -sN, Adam + "
             "cosine, 8-bit first layer, approxsign STE; accuracies on the whole 10000-image "
             "test set.", ""]
    t = doc.get("teacher")
    if t:
        lines += [f"Float teacher (xnorflow.sw.teacher.FloatCNN, {t['epochs']} epochs on "
                  f"{t['device']}, {t['time_s']:.0f} s): test accuracy "
                  f"{100 * t['test_acc']:.2f} %, training-set accuracy "
                  f"{100 * t['train_acc']:.2f} %.", ""]
    lines += ["| run | widths | change | epochs | float-sim | deploy | agree | fits "
              f"{TARGET} | device | train s | load avg |", "|---|---|---|---|---|---|---|---|"
              "---|---|---|"]
    for r in doc["runs"]:
        lines.append(f"| {r['name']} | {','.join(map(str, r['widths']))} | {r['note']} | "
                     f"{r['epochs']} | {100 * r['float_acc']:.2f} % | "
                     f"{100 * r['deploy_acc']:.2f} % | {r['agreement']:.4f} | "
                     f"{'yes' if r['fits'] is True else r['fits']} | {r['device']} | "
                     f"{r['train_time_s']:.0f} | {r['loadavg']} |")
    lines += ["", "Per-epoch histories and hyper-parameters are in the JSON beside this file."]
    return "\n".join(lines) + "\n"


def save(doc: dict) -> None:
    files.write_text(RESULTS / f"{STEM}.json", json.dumps(doc, indent=1) + "\n")
    files.write_text(RESULTS / f"{STEM}.md", markdown(doc))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=None, help="run only the runs whose name contains this")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--teacher-only", action="store_true")
    ap.add_argument("--render", action="store_true", help="only rewrite the .md from the JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = RESULTS / f"{STEM}.json"
    if args.render:
        files.write_text(RESULTS / f"{STEM}.md", markdown(json.loads(path.read_text())))
        return 0
    doc = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    doc["meta"] = {"command": "python benchmarks/recipe.py " + " ".join(argv or sys.argv[1:]),
                   "host": platform.node(), "threads": args.threads}
    data = load_dataset("fashion-mnist")
    todo = [r for r in runs() if not args.only or args.only in r["name"]]
    need_teacher = args.teacher_only or any(r["hp"].get("teacher") for r in todo)
    if need_teacher and not TEACHER.is_file():
        print(f"training the float teacher ({TEACHER_EPOCHS} epochs)", flush=True)
        doc["teacher"] = train_teacher(data, TEACHER, epochs=TEACHER_EPOCHS,
                                       device=args.device)
        doc["teacher"]["loadavg_start"] = [round(v, 2) for v in os.getloadavg()]
        save(doc)
    if args.teacher_only:
        return 0
    done = {r["name"] for r in doc["runs"]}
    for run in todo:
        if run["name"] in done:
            print(f"{run['name']}: already in {path.name}, skipped", flush=True)
            continue
        hp = dict(run["hp"])
        if hp.get("teacher") == "TEACHER":
            hp["teacher"] = TEACHER
        load = [round(v, 2) for v in os.getloadavg()]
        tmp = KEEP / run["name"]  # git-ignored; the headline row evaluates it from here
        if tmp.exists():
            shutil.rmtree(tmp)
        t0 = time.time()
        m = train(run["cfg"], tmp, data=data, progress=False, device=args.device,
                  log=lambda s, n=run["name"]: print(f"  {n}: {s}", flush=True), **hp)
        wall = time.time() - t0
        try:
            check_fits(lower_checkpoint(tmp), get_target(TARGET))
            fits = True
        except Exception as e:  # noqa: BLE001 - recorded, not fatal
            fits = f"no: {str(e).splitlines()[0]}"
        f = m["final"]
        doc["runs"].append({
            "name": run["name"], "note": run["note"], "widths": run["cfg"]["widths"],
            "config": m["config"], "hparams": {k: str(v) if isinstance(v, Path) else v
                                               for k, v in m["hparams"].items()},
            "epochs": hp["epochs"], "float_acc": f["float_acc"], "deploy_acc": f["deploy_acc"],
            "agreement": f["agreement"], "fits": fits, "device": m["hparams"]["device"],
            "train_time_s": round(m["train_time_s"], 1), "wall_s": round(wall, 1),
            "loadavg": load, "history": m["history"]})
        save(doc)
        print(f"{run['name']}: deploy {100 * f['deploy_acc']:.2f} %, float-sim "
              f"{100 * f['float_acc']:.2f} %, fits {fits}, {wall:.0f} s", flush=True)
    save(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
