"""Accuracy benchmark of issue 3: the goals table and the ablation, in deploy mode.

Every model is trained with :func:`xnorflow.sw.train.train`, lowered with
:func:`xnorflow.sw.lower.lower` and run by the golden model (:func:`xnorflow.sw.golden.run`)
on 100 % of the test set; the golden predictions are checked against the PyTorch deploy
backend (:func:`xnorflow.sw.deploy.run`, must be identical) and against float-sim (identical
except where XNOR-Net's ``beta`` is dropped at deploy, whose cost is reported).

Run from the repository root (1 torch thread per process; the machine is shared)::

    .venv/bin/python benchmarks/accuracy.py --part digits     # ~5-10 min
    .venv/bin/python benchmarks/accuracy.py --part fashion    # ~45 min
    .venv/bin/python benchmarks/accuracy.py --part digits --quick   # smoke test, tiny epochs

Writes ``benchmarks/results/accuracy.<part>.json`` and ``.md`` (``--quick`` writes under
``--out``, default ``benchmarks/results/quick``) and keeps checkpoints smaller than 2 MB
(model state only) in ``benchmarks/results/models/<name>/`` for the demo and compile tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from xnorflow.sw import deploy, golden
from xnorflow.sw.data import load_dataset
from xnorflow.sw.lower import CONFIG, load_checkpoint, lower
from xnorflow.sw.train import atomic_write_bytes, predict, train

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MAX_CKPT = 2 * 1024 * 1024

DIGITS_HP = {"epochs": 60, "batch": 32, "lr": 0.01}
FASHION_MLP_HP = {"epochs": 20, "batch": 64, "lr": 0.005}
FASHION_CNN_HP = {"epochs": 8, "batch": 64, "lr": 0.005}


def jobs(part: str, seeds: list[int]) -> list[dict]:
    """The runs of one part: goal rows (several seeds) then the ablation (first seed)."""
    out = []
    if part == "digits":
        base = {"model": "mlp", "dataset": "digits", "widths": [256, 256], "ste": "approxsign"}
        for s in seeds:
            out.append(dict(name=f"digits-mlp-xnor-in8-s{s}", group="goal",
                            row="mlp / digits / xnor, 8-bit first layer", goal=0.975, seed=s,
                            cfg={**base, "mode": "xnor", "in_bits": 8}, hp=DIGITS_HP))
        for s in seeds:
            out.append(dict(name=f"digits-mlp-xnor-in1-s{s}", group="goal",
                            row="mlp / digits / fully binary input (1-bit pixels)", goal=0.92,
                            seed=s, cfg={**base, "mode": "xnor", "in_bits": 1}, hp=DIGITS_HP))
        hp = DIGITS_HP
    else:
        base = {"model": "mlp", "dataset": "fashion-mnist", "widths": [256, 256],
                "ste": "approxsign"}
        s = seeds[0]
        out.append(dict(name=f"fashion-mlp-xnor-in8-s{s}", group="goal",
                        row="mlp / Fashion-MNIST / xnor", goal=0.89, seed=s,
                        cfg={**base, "mode": "xnor", "in_bits": 8}, hp=FASHION_MLP_HP))
        out.append(dict(name=f"fashion-mlpaug-xnor-in8-s{s}", group="goal",
                        row="mlp / Fashion-MNIST / xnor, 30 epochs, 1-px shift augmentation",
                        goal=0.89, seed=s, cfg={**base, "mode": "xnor", "in_bits": 8},
                        hp={**FASHION_MLP_HP, "epochs": 30, "augment": 1}))
        out.append(dict(name=f"fashion-cnn-xnor-in8-s{s}", group="goal",
                        row="cnn / Fashion-MNIST / xnor", goal=0.925, seed=s,
                        cfg={"model": "cnn", "dataset": "fashion-mnist", "mode": "xnor",
                             "in_bits": 8, "ste": "approxsign",
                             "widths": {"conv": [32, 64], "dense": [256]}},
                        hp=FASHION_CNN_HP))
        hp = FASHION_MLP_HP
    s = seeds[0]
    ds = "digits" if part == "digits" else "fashion"
    alpha = () if part == "digits" else (("xnor-alpha", {"mode": "xnor"}),)  # digits: goal row
    for label, extra in (("bwn", {"mode": "bwn"}), ("bnn", {"mode": "bnn"}), *alpha,
                         ("xnor+beta", {"mode": "xnor", "beta": True}),
                         ("dorefa-2", {"mode": "dorefa", "act_bits": 2}),
                         ("dorefa-4", {"mode": "dorefa", "act_bits": 4})):
        out.append(dict(name=f"{ds}-mlp-{label.replace('+', '-')}-in8-s{s}", group="ablation",
                        row=label, seed=s, cfg={**base, "in_bits": 8, **extra}, hp=hp))
    return out


def integer_predictions(cm, x: np.ndarray, golden_limit: int | None) -> dict:
    """Predictions of the integer model by every software backend.

    The golden model (the definition, slow: it packs every pixel into its own words) runs on
    the first ``golden_limit`` images (all if None); the PyTorch deploy backend and the numba
    CPU kernel (both tested bit-exact against the golden model) on all of them.
    """
    n = len(x) if golden_limit is None else min(golden_limit, len(x))
    t = time.time()
    g = [golden.run(cm, x[i : min(i + 500, n)]).predictions for i in range(0, n, 500)]
    out = {"golden": np.concatenate(g), "golden_images": n, "golden_time_s": time.time() - t}
    t = time.time()
    out["deploy"] = deploy.run(cm, x).predictions
    out["deploy_time_s"] = time.time() - t
    try:
        from xnorflow.sw import cpu_kernel
    except ImportError:  # pragma: no cover - the kernel is optional here
        return out
    t = time.time()
    out["cpu_kernel"] = cpu_kernel.run(cm, x, threads=1, intermediates=False).predictions
    out["cpu_kernel_time_s"] = time.time() - t
    return out


def run_job(job: dict, data, quick: bool, models_dir: Path | None,
            golden_limit: int | None = None, from_dir: Path | None = None) -> dict:
    hp = dict(job["hp"])
    if quick:
        hp["epochs"] = 1
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        if from_dir is None:
            m = train(job["cfg"], tmp, epochs=hp["epochs"], batch=hp["batch"], lr=hp["lr"],
                      seed=job["seed"], progress=sys.stderr.isatty(), log=lambda *a: None,
                      data=data, final_eval=False, augment=hp.get("augment", 0))
            t_train = time.time() - t0
            model, state = load_checkpoint(tmp)
        else:  # evaluate a run trained earlier by this script (its checkpoint + config)
            model, state = load_checkpoint(from_dir)
            shutil.copy(Path(from_dir) / CONFIG, Path(tmp) / CONFIG)
            m = {"config": state["config"], "hparams": state["hparams"],
                 "history": state["history"]}
            t_train = state["history"][-1]["time_s"]
        res = {k: job[k] for k in ("name", "group", "row", "seed")}
        res.update(goal=job.get("goal"), config=m["config"], hparams=m["hparams"],
                   train_time_s=round(t_train, 1), history=m["history"])
        fpred = predict(model, data.x_test)
        res["float_acc"] = float((fpred == data.y_test).mean())
        res["weight_bits"] = int(sum(b.op.weight.numel() for b in model.blocks))
        if model.config["mode"] == "bwn":
            res.update(deploy_acc=None, note="bwn: real activations, not deployable")
        else:
            cm = lower(model)
            p = integer_predictions(cm, data.x_test, golden_limit)
            dpred, gpred, ng = p["deploy"], p["golden"], p["golden_images"]
            res.update({k: (round(v, 1) if k.endswith("_s") else v) for k, v in p.items()
                        if not isinstance(v, np.ndarray)})
            res["deploy_acc"] = float((dpred == data.y_test).mean())
            res["golden_acc_on_its_images"] = float((gpred == data.y_test[:ng]).mean())
            res["golden_equals_deploy"] = bool(np.array_equal(gpred, dpred[:ng]))
            if "cpu_kernel" in p:
                res["cpu_kernel_equals_deploy"] = bool(np.array_equal(p["cpu_kernel"], dpred))
            gpred = dpred  # below: float-sim against the integer model on 100 %
            if model.config.get("beta"):
                model.set_beta(False)
                nb = predict(model, data.x_test)
                res["float_acc_beta_dropped"] = float((nb == data.y_test).mean())
                res["float_vs_deploy_agreement"] = float((nb == gpred).mean())
                res["beta_cost"] = res["float_acc"] - res["deploy_acc"]
            else:
                res["float_vs_deploy_agreement"] = float((fpred == gpred).mean())
            if (not res["golden_equals_deploy"] or res["float_vs_deploy_agreement"] != 1.0
                    or not res.get("cpu_kernel_equals_deploy", True)):
                res["EXACTNESS_FAILURE"] = True
        if models_dir is not None:
            slim = {"state_dict": model.state_dict(), "epoch": state["epoch"],
                    "history": state["history"], "config": state["config"]}
            import io

            buf = io.BytesIO()
            torch.save(slim, buf)
            if buf.tell() < MAX_CKPT:
                dest = models_dir / job["name"]
                dest.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(dest / "checkpoint.pt", buf.getvalue())
                shutil.copy(Path(tmp) / CONFIG, dest / CONFIG)
                res["checkpoint"] = str(dest.relative_to(ROOT))
            else:
                res["checkpoint"] = f"not kept ({buf.tell() / 2**20:.1f} MB > 2 MB)"
    return res


def pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def deploy_text(results: list[dict], meta: dict) -> str:
    """How the deploy accuracy and the exactness column were obtained for these results."""
    if not any("cpu_kernel_equals_deploy" in r for r in results):  # runs before the CPU kernel
        return ("Deploy accuracy = golden model (integer IR) on 100 % of the test set; `exact` "
                "= golden predictions identical to the PyTorch deploy backend and to float-sim "
                "(with beta switched off where it was trained with beta).")
    where = ("all test images" if meta.get("golden_limit") is None else
             f"the first {meta['golden_limit']} test images (it is slow: ~1 s per 10 CNN "
             "images)")
    return ("Deploy accuracy = the integer model (compiled IR) on 100 % of the test set, run by "
            "the PyTorch deploy backend and the numba CPU kernel (both must agree on every "
            f"image); the golden model runs on {where}. `exact` = golden, deploy and CPU-kernel "
            "predictions identical, and float-sim identical to deploy on every test image "
            "(with beta switched off where it was trained with beta).")


def markdown(part: str, results: list[dict], meta: dict) -> str:
    lines = [f"# Accuracy benchmark: {part}", "",
             f"Command: `{meta['command']}`  ",
             f"Seeds: {sorted({r['seed'] for r in results})}; torch threads: "
             f"{meta['threads']}; host: {meta['host']}; load average at start "
             f"{meta['loadavg_start']}; total time {meta['total_time_s']:.0f} s.", "",
             deploy_text(results, meta), "",
             "## Goals", "", "| model / data / mode | goal | deploy acc (per seed) | mean | "
             "met? | exact |", "|---|---|---|---|---|---|"]
    rows: dict[str, list[dict]] = {}
    for r in results:
        if r["group"] == "goal":
            rows.setdefault(r["row"], []).append(r)
    for row, rs in rows.items():
        accs = [r["deploy_acc"] for r in rs]
        mean = statistics.mean(accs)
        goal = rs[0]["goal"]
        met = "yes" if mean >= goal else f"NO (short by {100 * (goal - mean):.2f} points)"
        exact = all(not r.get("EXACTNESS_FAILURE") for r in rs)
        lines.append(f"| {row} | >= {pct(goal)} | {', '.join(pct(a) for a in accs)} | "
                     f"{pct(mean)} | {met} | {'yes' if exact else 'NO'} |")
    abl = [r for r in results if r["group"] == "ablation"]
    if not abl:
        return "\n".join(lines + ["", "Hyper-parameters per run are in the JSON beside this "
                                   "file."]) + "\n"
    ep = sorted({r["hparams"]["epochs"] for r in abl})
    lines += ["", f"## Ablation (mlp 256-256, 8-bit first layer, one seed, {ep} epochs)", "",
              "| mode | float-sim acc | deploy acc | beta dropped (float) | cost of dropping "
              "beta | exact | train s |", "|---|---|---|---|---|---|---|"]
    for r in results:
        if r["group"] != "ablation":
            continue
        cost = r.get("beta_cost")
        exact = "n/a" if r.get("deploy_acc") is None else (
            "NO" if r.get("EXACTNESS_FAILURE") else "yes")
        lines.append(
            f"| {r['row']} | {pct(r['float_acc'])} | {pct(r.get('deploy_acc'))} | "
            f"{pct(r.get('float_acc_beta_dropped'))} | "
            f"{'n/a' if cost is None else f'{100 * cost:.2f} points'} | "
            f"{exact} | {r['train_time_s']:.0f} |")
    xnor = [r for r in results if r["group"] == "goal" and r["config"]["mode"] == "xnor"
            and r["config"]["model"] == "mlp" and r["config"]["in_bits"] == 8]
    if xnor:
        lines.append(f"| xnor (alpha), from the goal row seed {xnor[0]['seed']} | "
                     f"{pct(xnor[0]['float_acc'])} | {pct(xnor[0]['deploy_acc'])} | n/a | "
                     f"n/a | yes | {xnor[0]['train_time_s']:.0f} |")
    lines += ["", "Hyper-parameters per run are in the JSON beside this file."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("digits", "fashion"), required=True)
    ap.add_argument("--seeds", default="0,1,2", help="seeds of the goal rows (digits)")
    ap.add_argument("--quick", action="store_true", help="1 epoch per run, results to --out")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--golden-limit", type=int, default=None,
                    help="golden model on the first N test images (default: all for digits, "
                    "1000 for fashion); deploy and the CPU kernel always run on all")
    ap.add_argument("--from-checkpoint", type=Path, default=None,
                    help="evaluate this earlier training output of the (single) selected job "
                    "instead of training it")
    ap.add_argument("--ablation-only", action="store_true",
                    help="skip the goal rows (output accuracy.PART.ablation.*)")
    ap.add_argument("--ablation-epochs", type=int, default=None,
                    help="override the ablation runs' epochs (fewer on a busy machine)")
    ap.add_argument("--only", default=None,
                    help="run only jobs whose name contains this (output accuracy.PART.ONLY.*)")
    ap.add_argument("--render", type=Path, default=None,
                    help="only rewrite the .md beside an existing results JSON")
    args = ap.parse_args(argv)
    if args.render is not None:
        doc = json.loads(args.render.read_text())
        atomic_write_bytes(args.render.with_suffix(".md"),
                           markdown(args.part, doc["results"], doc["meta"]).encode())
        return 0
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    out = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    models_dir = None if args.quick else RESULTS / "models"
    data = load_dataset("digits" if args.part == "digits" else "fashion-mnist")
    todo = [j for j in jobs(args.part, seeds) if not args.only or args.only in j["name"]]
    if args.ablation_only:
        todo = [j for j in todo if j["group"] == "ablation"]
    if args.ablation_epochs:
        for j in todo:
            if j["group"] == "ablation":
                j["hp"] = {**j["hp"], "epochs": args.ablation_epochs}
    meta = {"command": "python benchmarks/accuracy.py " + " ".join(argv or sys.argv[1:]),
            "seeds": seeds, "threads": args.threads, "host": platform.node(),
            "loadavg_start": [round(v, 2) for v in os.getloadavg()], "quick": args.quick}
    golden_limit = args.golden_limit or (None if args.part == "digits" else 1000)
    meta["golden_limit"] = golden_limit
    if args.from_checkpoint is not None and len(todo) != 1:
        ap.error(f"--from-checkpoint needs exactly one selected job, not {len(todo)}")
    t0 = time.time()
    results = []
    for i, job in enumerate(todo):
        r = run_job(job, data, args.quick, models_dir, golden_limit, args.from_checkpoint)
        results.append(r)
        print(f"[{i + 1}/{len(todo)}] {r['name']}: float-sim {pct(r['float_acc'])}, deploy "
              f"{pct(r.get('deploy_acc'))}, exact {not r.get('EXACTNESS_FAILURE')}, "
              f"{r['train_time_s']:.0f} s", flush=True)
        meta["total_time_s"] = time.time() - t0
        doc = {"meta": meta, "results": results}
        stem = (f"accuracy.{args.part}" + (f".{args.only}" if args.only else "")
                + (".ablation" if args.ablation_only else ""))
        atomic_write_bytes(out / f"{stem}.json", (json.dumps(doc, indent=1) + "\n").encode())
        atomic_write_bytes(out / f"{stem}.md", markdown(args.part, results, meta).encode())
    print(markdown(args.part, results, meta))
    return 1 if any(r.get("EXACTNESS_FAILURE") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
