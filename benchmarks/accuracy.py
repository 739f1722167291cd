"""Accuracy benchmark: the README's goals tables and the ablation, in deploy mode.

Every model is trained with :func:`xnorflow.sw.train.train`, lowered with
:func:`xnorflow.sw.lower.lower` and run by the golden model (:func:`xnorflow.sw.golden.run`)
on 100 % of the test set; the golden predictions are checked against the PyTorch deploy
backend (:func:`xnorflow.sw.deploy.run`, must be identical) and against float-sim (identical
except where XNOR-Net's ``beta`` is dropped at deploy, whose cost is reported).

Run from the repository root (1 torch thread per process; the machine is shared)::

    .venv/bin/python benchmarks/accuracy.py --part digits     # ~5-10 min
    .venv/bin/python benchmarks/accuracy.py --part fashion    # ~45 min
    .venv/bin/python benchmarks/accuracy.py --part digits --quick   # smoke test, tiny epochs

``--part headline`` trains the Fashion-MNIST headline goal rows (models that must compile for
``ecp5-85f``), meant for a GPU: ``--device cuda --parallel N`` trains N rows at once on one
GPU, each in its own process; ``--data-path`` reads the data from a folder carried along;
``--out`` takes the results and checkpoints. Every row records where it was trained (device,
its name, epochs, wall time, load average). ``--estimate-steps N`` trains nothing: it times N
training steps of every headline row on this device and writes the estimated time per epoch
and per run (``accuracy.headline.estimate.*``). ``scripts/gpu_headline.sh`` is the one
prepared command for a GPU machine.

Writes ``benchmarks/results/accuracy.<part>.json`` and ``.md`` (``--quick`` writes under
``--out``, default ``benchmarks/results/quick``) and keeps checkpoints smaller than 2 MB
(model state only; 4 MB for headline rows) in ``<out>/models/<name>/``: not committed, but
the two that tests and the demo read (``benchmarks/README.md``); this script regenerates them.
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

from xnorflow.sw import deploy, files, golden
from xnorflow.sw.data import load_dataset
from xnorflow.sw.errors import UserError
from xnorflow.sw.lower import CONFIG, load_checkpoint, lower
from xnorflow.sw.models import build_model, make_config
from xnorflow.sw.program import check_fits
from xnorflow.sw.targets import get_target
from xnorflow.sw.train import predict, resolve_device, train

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MAX_CKPT = 2 * 1024 * 1024
MAX_HEADLINE_CKPT = 4 * 1024 * 1024

#: the headline rows (docs/training.md): Fashion-MNIST models that compile for this target
HEADLINE_TARGET = "ecp5-85f"
#: the MLP recipe found by benchmarks/recipe.py (results/recipe.fashion-mlp.md)
FASHION_MLP_RECIPE = {"widths": [512, 512], "hp": {"epochs": 40, "batch": 64, "lr": 0.005,
                                                   "teacher": "TEACHER", "kd_alpha": 0.7,
                                                   "kd_temp": 4.0}}
#: VGG-style stacks (several 3x3 convs per stage) that fit ecp5-85f's 1 Mbit of weights
#: (4096 x 256-bit words); cnn 64,128:512 of the issue's outside run needs 3.3 Mbit
HEADLINE_CNNS = [
    ("vgg6", "64,64p,128,128p,192,192p:", {}),                 # 0.83 Mbit, no dense layer
    ("vgg6-kd-aug", "64,64p,128,128p,192,192p:",               # + distillation, 1-px shifts
     {"teacher": "TEACHER", "kd_alpha": 0.7, "kd_temp": 4.0, "augment": 1}),
    ("vgg5-d256", "64,64p,128,128p,128p:256", {}),             # 0.70 Mbit
    ("vgg4-gmp", "64,64p,128,128p,256p7:256", {}),             # 0.62 Mbit, global max-pool
]
FASHION_CNN_HEADLINE_HP = {"epochs": 100, "batch": 64, "lr": 0.005}
TEACHER_EPOCHS = 12
WARM_STEPS = 5

DIGITS_HP = {"epochs": 60, "batch": 32, "lr": 0.01}
FASHION_MLP_HP = {"epochs": 20, "batch": 64, "lr": 0.005}
FASHION_CNN_HP = {"epochs": 8, "batch": 64, "lr": 0.005}


def jobs(part: str, seeds: list[int]) -> list[dict]:
    """The runs of one part: goal rows (several seeds) then the ablation (first seed)."""
    out = []
    if part == "headline":
        return headline_jobs(seeds)
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


def headline_jobs(seeds: list[int]) -> list[dict]:
    """Issue 16's goal rows: the MLP recipe and VGG-style CNNs, all for ``ecp5-85f``."""
    from xnorflow.sw.models import parse_widths

    out = []
    for s in seeds:
        out.append(dict(name=f"fashion-mlp512-kd-s{s}", group="goal", seed=s,
                        row="mlp 512,512 / Fashion-MNIST / xnor, distilled", goal=0.89,
                        target=HEADLINE_TARGET,
                        cfg={"model": "mlp", "dataset": "fashion-mnist", "mode": "xnor",
                             "in_bits": 8, "ste": "approxsign",
                             "widths": FASHION_MLP_RECIPE["widths"]},
                        hp=dict(FASHION_MLP_RECIPE["hp"])))
        for tag, widths, extra in HEADLINE_CNNS:
            how = (", distilled, 1-px shifts" if extra.get("teacher") and extra.get("augment")
                   else ", distilled" if extra.get("teacher") else "")
            out.append(dict(name=f"fashion-{tag}-s{s}", group="goal", seed=s, goal=0.925,
                            row=f"cnn {widths} / Fashion-MNIST / xnor{how}",
                            target=HEADLINE_TARGET,
                            cfg={"model": "cnn", "dataset": "fashion-mnist", "mode": "xnor",
                                 "in_bits": 8, "ste": "approxsign",
                                 "widths": parse_widths("cnn", widths)},
                            hp={**FASHION_CNN_HEADLINE_HP, **extra}))
    return out


def check_job_fits(job: dict, data) -> None:
    """Refuse, before any training, a row whose model cannot compile for its target."""
    if not job.get("target"):
        return
    cfg = make_config(job["cfg"]["model"], data.name, data.shape, data.classes,
                      **{k: v for k, v in job["cfg"].items() if k not in ("model", "dataset")})
    torch.manual_seed(0)
    check_fits(lower(build_model(cfg), verify=False), get_target(job["target"]))


def device_name(device: str) -> str:
    """A human name of the device a row was trained on."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def integer_predictions(cm, x: np.ndarray, golden_limit: int | None, device: str = "cpu",
                        threads: int = 1) -> dict:
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
    out["deploy"] = deploy.run(cm, x, device=device).predictions
    out["deploy_time_s"] = time.time() - t
    from xnorflow.sw import cpu_kernel

    t = time.time()
    out["cpu_kernel"] = cpu_kernel.run(cm, x, threads=threads,
                                       intermediates=False).predictions
    out["cpu_kernel_time_s"] = time.time() - t
    return out


def run_job(job: dict, data, quick: bool, models_dir: Path | None,
            golden_limit: int | None = None, from_dir: Path | None = None,
            device: str = "cpu", teacher: Path | None = None) -> dict:
    hp = dict(job["hp"])
    if quick:
        hp["epochs"] = 1
    extra = {k: hp[k] for k in ("bn_momentum", "weight_decay", "label_smoothing", "kd_alpha",
                                "kd_temp") if k in hp}
    if hp.get("teacher"):
        extra["teacher"] = teacher
    load = [round(v, 2) for v in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        if from_dir is None:
            m = train(job["cfg"], tmp, epochs=hp["epochs"], batch=hp["batch"], lr=hp["lr"],
                      seed=job["seed"], progress=sys.stderr.isatty(), log=lambda *a: None,
                      data=data, final_eval=False, augment=hp.get("augment", 0),
                      device=device, **extra)
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
                   train_time_s=round(t_train, 1), history=m["history"],
                   trained_on={"device": m["hparams"].get("device", "cpu"),
                               "device_name": device_name(m["hparams"].get("device", "cpu")),
                               "host": platform.node(), "epochs": len(m["history"]),
                               "train_time_s": round(t_train, 1),
                               "loadavg_start": load if from_dir is None else None,
                               "torch": torch.__version__})
        if from_dir is not None:
            res["evaluated_from"] = str(from_dir)
        fpred = predict(model.to(device), data.x_test)  # float-sim on the training device
        model.to("cpu")  # lowering reads the weights on the CPU
        res["float_acc"] = float((fpred == data.y_test).mean())
        res["weight_bits"] = int(sum(b.op.weight.numel() for b in model.blocks))
        if model.config["mode"] == "bwn":
            res.update(deploy_acc=None, note="bwn: real activations, not deployable")
        else:
            cm = lower(model)
            p = integer_predictions(cm, data.x_test, golden_limit, device,
                                    torch.get_num_threads())
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
                nb = predict(model, data.x_test)  # on the CPU: the model was moved back
                res["float_acc_beta_dropped"] = float((nb == data.y_test).mean())
                res["float_vs_deploy_agreement"] = float((nb == gpred).mean())
                res["beta_cost"] = res["float_acc"] - res["deploy_acc"]
            else:
                res["float_vs_deploy_agreement"] = float((fpred == gpred).mean())
            if (not res["golden_equals_deploy"] or res["float_vs_deploy_agreement"] != 1.0
                    or not res.get("cpu_kernel_equals_deploy", True)):
                res["EXACTNESS_FAILURE"] = True
            if job.get("target"):
                try:
                    check_fits(cm, get_target(job["target"]))
                    res["compiles_for"] = job["target"]
                except UserError as e:
                    res["compiles_for"] = None
                    res["compile_error"] = str(e)
        if models_dir is not None:
            slim = {"state_dict": model.state_dict(), "epoch": state["epoch"],
                    "history": state["history"], "config": state["config"]}
            import io

            buf = io.BytesIO()
            torch.save(slim, buf)
            limit = MAX_HEADLINE_CKPT if job.get("target") else MAX_CKPT
            if buf.tell() < limit:
                dest = models_dir / job["name"]
                dest.mkdir(parents=True, exist_ok=True)
                files.write_bytes(dest / "checkpoint.pt", buf.getvalue())
                shutil.copy(Path(tmp) / CONFIG, dest / CONFIG)
                res["checkpoint"] = (str(dest.relative_to(ROOT)) if dest.is_relative_to(ROOT)
                                     else str(dest))
            else:
                res["checkpoint"] = (f"not kept ({buf.tell() / 2**20:.1f} MB > "
                                     f"{limit / 2**20:.0f} MB)")
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


def where(r: dict) -> str:
    """Where a row was trained: device, epochs, training time."""
    t = r.get("trained_on")
    if not t:
        return f"CPU (not recorded), {r['hparams']['epochs']} epochs, {r['train_time_s']:.0f} s"
    return f"{t['device_name']}, {t['epochs']} epochs, {t['train_time_s']:.0f} s"


def markdown(part: str, results: list[dict], meta: dict) -> str:
    lines = [f"# Accuracy benchmark: {part}", "",
             f"Command: `{meta['command']}`  ",
             f"Seeds: {sorted({r['seed'] for r in results})}; torch threads: "
             f"{meta['threads']}; host: {meta['host']}; load average at start "
             f"{meta['loadavg_start']}; total time {meta['total_time_s']:.0f} s.", "",
             deploy_text(results, meta), "",
             *([f"**Smoke test: only the first {meta['limit']} training and {meta['limit']} "
                "test images were used; these are not accuracy results.**", ""]
               if meta.get("limit") else []),
             "## Goals", "", "| model / data / mode | goal | deploy acc (per seed) | mean | "
             "met? | exact | compiles for | trained on |", "|---|---|---|---|---|---|---|---|"]
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
        fits = ", ".join(sorted({str(r.get("compiles_for") or "n/a") if "compiles_for" in r
                                 else "not checked" for r in rs}))
        lines.append(f"| {row} | >= {pct(goal)} | {', '.join(pct(a) for a in accs)} | "
                     f"{pct(mean)} | {met} | {'yes' if exact else 'NO'} | {fits} | "
                     f"{'; '.join(where(r) for r in rs)} |")
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


def _pool_job(args: tuple) -> dict:
    """One row in its own process (``--parallel``): load the data, train, evaluate."""
    job, quick, models_dir, golden_limit, device, teacher, data_path, threads, limit = args
    torch.set_num_threads(threads)
    try:
        data = load_dataset(job["cfg"]["dataset"], data_path)
        if limit:
            from xnorflow.sw.data import Dataset

            data = Dataset(data.name, data.x_train[:limit], data.y_train[:limit],
                           data.x_test[:limit], data.y_test[:limit], data.classes)
        return run_job(job, data, quick, models_dir, golden_limit, None, device, teacher)
    except Exception as e:  # noqa: BLE001 - one failed row must not lose the others
        return {"name": job["name"], "group": job["group"], "row": job["row"],
                "seed": job["seed"], "error": f"{type(e).__name__}: {e}"}


def _timed_steps(job: dict, data, device: str, n_steps: int) -> tuple[float, float]:
    """(wall, CPU) seconds of train() on ``n_steps`` steps of ``job`` (start-up included)."""
    from xnorflow.sw.data import Dataset

    hp = job["hp"]
    extra = {k: hp[k] for k in ("bn_momentum", "label_smoothing") if k in hp}
    n = n_steps * hp["batch"]
    cut = Dataset(data.name, data.x_train[:n], data.y_train[:n], data.x_test[:1],
                  data.y_test[:1], data.classes)
    with tempfile.TemporaryDirectory() as tmp:
        w0, c0 = time.time(), time.process_time()
        train(job["cfg"], tmp, epochs=1, batch=hp["batch"], lr=hp["lr"], seed=job["seed"],
              progress=False, log=lambda *a: None, data=cut, final_eval=False, device=device,
              **extra)
        return time.time() - w0, time.process_time() - c0


def estimate(todo: list[dict], data, device: str, steps: int, out: Path, meta: dict) -> None:
    """Time ``steps`` training steps and a test-set evaluation slice of every row on
    ``device`` (the real training loop on a cut data set) and extrapolate to whole runs."""
    from xnorflow.sw.train import predict

    rows = []
    for job in todo:
        hp = job["hp"]
        load = [round(v, 2) for v in os.getloadavg()]
        _timed_steps(job, data, device, 1)  # one-time start-up costs, not counted
        short = _timed_steps(job, data, device, WARM_STEPS)
        long = _timed_steps(job, data, device, WARM_STEPS + steps)  # the difference: steps
        step_wall, step_cpu = ((b - a) / steps for a, b in zip(short, long, strict=True))
        model = build_model(make_config(job["cfg"]["model"], data.name, data.shape,
                                        data.classes, **{k: v for k, v in job["cfg"].items()
                                                         if k not in ("model", "dataset")}))
        model.to(device)
        m_eval = min(500, len(data.x_test))
        w0, c0 = time.time(), time.process_time()
        predict(model, data.x_test[:m_eval])
        scale = len(data.x_test) / m_eval
        eval_wall, eval_cpu = (time.time() - w0) * scale, (time.process_time() - c0) * scale
        per_step = len(data.x_train) // hp["batch"]
        wall = step_wall * per_step + eval_wall
        cpu = step_cpu * per_step + eval_cpu
        rows.append({"name": job["name"], "row": job["row"], "device": device,
                     "device_name": device_name(device), "steps_timed": steps,
                     "batch": hp["batch"], "s_per_step_wall": step_wall,
                     "s_per_step_cpu": step_cpu, "eval_s_per_epoch_wall": eval_wall,
                     "eval_s_per_epoch_cpu": eval_cpu, "s_per_epoch_wall": wall,
                     "s_per_epoch_cpu": cpu, "epochs": hp["epochs"],
                     "run_hours_cpu": cpu * hp["epochs"] / 3600,
                     "run_hours_wall": wall * hp["epochs"] / 3600, "loadavg": load})
        print(f"{job['name']}: {cpu:.0f} CPU-s/epoch ({wall:.0f} s wall at load {load}), "
              f"{hp['epochs']} epochs = {cpu * hp['epochs'] / 3600:.1f} h of one core",
              flush=True)
    doc = {"meta": meta, "estimates": rows}
    lines = ["# Estimated training time of the headline rows", "",
             f"Command: `{meta['command']}`  ", f"Host {meta['host']}, torch threads "
             f"{meta['threads']}, load average at start {meta['loadavg_start']}.", "",
             "Each row: after one untimed warm-up call, the real training loop timed on "
             f"{WARM_STEPS} and on "
             f"{WARM_STEPS} + {steps} steps (the difference is {steps} steps without the "
             "start-up), plus the float-sim evaluation of 500 test images, scaled to an epoch "
             "(every training image once, the whole test set evaluated). CPU seconds are the "
             "process's own (one torch thread), so they hold for an unloaded core; wall "
             "seconds are what the loaded shared machine gave. These are ESTIMATES from a "
             "short measurement, not training runs.", "",
             "| row | device | CPU s/step | CPU s/epoch | wall s/epoch | epochs | estimated "
             "run (one core) | load avg |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['row']} | {r['device_name']} | {r['s_per_step_cpu']:.3f} | "
                     f"{r['s_per_epoch_cpu']:.0f} | {r['s_per_epoch_wall']:.0f} | "
                     f"{r['epochs']} | {r['run_hours_cpu']:.1f} h | {r['loadavg']} |")
    files.write_text(out / "accuracy.headline.estimate.json", json.dumps(doc, indent=1) + "\n")
    files.write_text(out / "accuracy.headline.estimate.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("digits", "fashion", "headline"), required=True)
    ap.add_argument("--seeds", default=None,
                    help="seeds of the goal rows (default 0,1,2 for digits, 0 for headline)")
    ap.add_argument("--quick", action="store_true", help="1 epoch per run, results to --out")
    ap.add_argument("--out", type=Path, default=None,
                    help="results folder (default benchmarks/results; checkpoints go to "
                    "OUT/models)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu",
                    help="cpu (default), cuda or auto: where the rows are trained")
    ap.add_argument("--parallel", type=int, default=1,
                    help="rows trained at once, each in its own process (on one GPU: "
                    "several small trainings share it)")
    ap.add_argument("--data-path", default=None,
                    help="folder of the data set's files (default: the usual place)")
    ap.add_argument("--estimate-steps", type=int, default=None, metavar="N",
                    help="train nothing: time N steps per row and write estimated run times")
    ap.add_argument("--goals-only", action="store_true", help="skip the ablation rows")
    ap.add_argument("--limit", type=int, default=None, metavar="N",
                    help="smoke tests: only the first N training and N test images "
                    "(recorded in the results)")
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
    ap.add_argument("--epochs", type=int, default=None,
                    help="override every selected row's epochs (recorded in the results)")
    ap.add_argument("--only", default=None,
                    help="run only jobs whose name contains this (output accuracy.PART.ONLY.*)")
    ap.add_argument("--render", type=Path, default=None,
                    help="only rewrite the .md beside an existing results JSON")
    args = ap.parse_args(argv)
    if args.render is not None:
        doc = json.loads(args.render.read_text())
        files.write_text(args.render.with_suffix(".md"),
                         markdown(args.part, doc["results"], doc["meta"]))
        return 0
    try:
        device = resolve_device(args.device)
    except UserError as e:
        ap.error(str(e))
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in (args.seeds or ("0" if args.part == "headline" else "0,1,2"))
             .split(",")]
    out = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    models_dir = None if args.quick else out / "models"
    data = load_dataset("digits" if args.part == "digits" else "fashion-mnist", args.data_path)
    if args.limit:
        from xnorflow.sw.data import Dataset

        data = Dataset(data.name, data.x_train[: args.limit], data.y_train[: args.limit],
                       data.x_test[: args.limit], data.y_test[: args.limit], data.classes)
    todo = [j for j in jobs(args.part, seeds) if not args.only or args.only in j["name"]]
    if args.ablation_only:
        todo = [j for j in todo if j["group"] == "ablation"]
    if args.goals_only:
        todo = [j for j in todo if j["group"] == "goal"]
    if args.ablation_epochs:
        for j in todo:
            if j["group"] == "ablation":
                j["hp"] = {**j["hp"], "epochs": args.ablation_epochs}
    if args.epochs:
        for j in todo:
            j["hp"] = {**j["hp"], "epochs": args.epochs}
    for job in todo:  # a row that cannot compile for its target is refused before training
        try:
            check_job_fits(job, data)
        except UserError as e:
            ap.error(f"{job['name']} does not compile for {job['target']}: {e}")
    meta = {"command": "python benchmarks/accuracy.py " + " ".join(argv or sys.argv[1:]),
            "seeds": seeds, "threads": args.threads, "host": platform.node(),
            "loadavg_start": [round(v, 2) for v in os.getloadavg()], "quick": args.quick,
            "device": device, "device_name": device_name(device), "parallel": args.parallel,
            "limit": args.limit}
    if args.estimate_steps:
        estimate(todo, data, device, args.estimate_steps, out, meta)
        return 0
    golden_limit = args.golden_limit or (None if args.part == "digits" else 1000)
    meta["golden_limit"] = golden_limit
    if args.from_checkpoint is not None and len(todo) != 1:
        ap.error(f"--from-checkpoint needs exactly one selected job, not {len(todo)}")
    teacher = None
    if any(j["hp"].get("teacher") for j in todo) and args.from_checkpoint is None:
        from xnorflow.sw.teacher import train_teacher

        teacher = out / "teacher.npy"
        if not teacher.is_file():
            t_epochs = 1 if args.quick else TEACHER_EPOCHS
            print(f"training the float teacher ({t_epochs} epochs) on {device}", flush=True)
            meta["teacher"] = train_teacher(data, teacher, epochs=t_epochs, device=device,
                                            log=lambda *a: None)
    t0 = time.time()
    results = []
    stem = (f"accuracy.{args.part}" + (f".{args.only}" if args.only else "")
            + (".ablation" if args.ablation_only else "")
            + (".goals" if args.goals_only else ""))

    def record(r: dict, i: int) -> None:
        results.append(r)
        if "error" in r:
            print(f"[{i}/{len(todo)}] {r['name']}: FAILED: {r['error']}", flush=True)
        else:
            print(f"[{i}/{len(todo)}] {r['name']}: float-sim {pct(r['float_acc'])}, deploy "
                  f"{pct(r.get('deploy_acc'))}, exact {not r.get('EXACTNESS_FAILURE')}, "
                  f"{r['train_time_s']:.0f} s", flush=True)
        meta["total_time_s"] = time.time() - t0
        ok = [x for x in results if "error" not in x]
        doc = {"meta": meta, "results": ok,
               "failed": [x for x in results if "error" in x]}
        files.write_text(out / f"{stem}.json", json.dumps(doc, indent=1) + "\n")
        files.write_text(out / f"{stem}.md", markdown(args.part, ok, meta))

    if args.parallel > 1 and args.from_checkpoint is None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = multiprocessing.get_context("spawn")  # CUDA cannot fork
        with ProcessPoolExecutor(max_workers=args.parallel, mp_context=ctx) as pool:
            futs = [pool.submit(_pool_job, (job, args.quick, models_dir, golden_limit, device,
                                            teacher, args.data_path, args.threads,
                                            args.limit))
                    for job in todo]
            for i, fut in enumerate(as_completed(futs)):
                record(fut.result(), i + 1)
    else:
        for i, job in enumerate(todo):
            record(run_job(job, data, args.quick, models_dir, golden_limit,
                           args.from_checkpoint, device, teacher), i + 1)
    ok = [x for x in results if "error" not in x]
    print(markdown(args.part, ok, meta))
    failed = len(ok) != len(results)
    return 1 if failed or any(r.get("EXACTNESS_FAILURE") for r in ok) else 0


if __name__ == "__main__":
    sys.exit(main())
