"""RTL verification benchmark: differential random layers, digits on Icarus, FMNIST on Verilator.

Parts (``--part``; ``all`` runs the first three; each writes
``benchmarks/results/rtl.<part>.json`` and appends its summary to
``benchmarks/results/rtl.txt``):

* ``random``: >= ``--layers`` (1000) random layers in random networks
  (:func:`xnorflow.sw.synthetic.random_network`) on random geometries, through golden,
  cpu, amaranth and icarus; every hidden bit, score and prediction must equal golden. Many
  networks share one Icarus launch (one Verilog per geometry, sized for the batch).
* ``digits``: the full digits test split (360 images) on Icarus, bit-exact vs golden.
* ``fmnist``: the full Fashion-MNIST test set (10,000 images) on Verilator, bit-exact.
* ``speed``: Icarus and Verilator on the same design and images (``--limit`` digits images
  through the digits network), simulated cycles per second of each and their ratio.
* ``batching``: the first ``--limit`` images of ``--dataset`` (digits or fmnist) one per
  START and then batched, in one launch: bit-exact vs golden both ways, cycles per image of
  each (writes ``rtl.batching-<dataset>.json``).

``digits`` and ``fmnist`` send ``--images-per-start`` images per START (default: the
target's ``R`` rows, capped by the host at the program's ``max_batch``; the dense layers then
fill that many array rows); ``--images-per-start 1`` runs one image per START on a program
compiled for one image (``max_batch`` 1, unless ``--model`` names one: the compiler may then
split dense layers across the rows or spread their groups over them) and writes
``rtl.<part>-1.json``.

Each hardware run reports wall time, accelerator cycles per image and the simulator's speed
in simulated clock cycles per second (cycles of the whole run, host link included, over the
simulation's wall time). Results are written after every batch, marked ``"partial": true``
until the part finishes.

Usage::

    .venv/bin/python benchmarks/rtl.py --part random --layers 1000
    .venv/bin/python benchmarks/rtl.py --part digits --model runs/mlp-up5k
    .venv/bin/python benchmarks/rtl.py --part fmnist --model runs/fmnist-ecp5
    .venv/bin/python benchmarks/rtl.py --part batching --dataset fmnist --limit 16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from xnorflow.sw import files
from xnorflow.sw.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "build" / "bench-rtl"


def _write(part: str, doc: dict) -> None:
    files.write_text(RESULTS / f"rtl.{part}.json", json.dumps(doc, indent=2) + "\n")


def _summary(lines: list[str]) -> None:
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    with open(RESULTS / "rtl.txt", "a") as f:
        f.write(text + "\n")


def _env() -> dict:
    from xnorflow.sim.rtl import sources_digest

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "hw", "sw", "sim"], cwd=ROOT,
                               text=True, capture_output=True).stdout.split("\n")
    except OSError:
        head, dirty = "?", []
    return {"python": sys.version.split()[0], "machine": platform.machine(),
            "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "git_head": head, "uncommitted_sources": [d for d in dirty if d.strip()],
            "hw_sw_sources_sha256": sources_digest()}


# ----- part 1: random layers -------------------------------------------------------------
def part_random(args) -> int:
    from tqdm import tqdm

    from xnorflow.sim import backends
    from xnorflow.sim.compare import agreement
    from xnorflow.sw import program, synthetic

    def readable_layers(mf):
        """Which hidden maps of the model folder's program stay readable after a run."""
        return program.readable_layers(program.decode_memories(mf.memories)[1])

    base = args.seed
    doc = {"part": "random", "partial": True, "seed": base, "target_layers": args.layers,
           "images_per_network": args.images, "networks_per_launch": args.batch,
           "max_hw": args.max_hw, "max_c": args.max_c, "max_out_c": args.max_out_c,
           "max_hidden": args.max_hidden,
           "backends": ["golden", "cpu", "amaranth", "icarus"], "env": _env(),
           "layers": 0, "layers_observed": 0, "split_layers": 0, "spread_layers": 0,
           "spread_conv_layers": 0, "spread_pooled_layers": 0,
           "networks": 0,
           "mismatches": [], "errors": [],
           "launches": [],
           "modes": {}, "command": " ".join(sys.argv)}
    t_start = time.perf_counter()
    net = 0
    bar = tqdm(total=args.layers, desc="random layers", unit="layer")
    while doc["layers"] < args.layers:
        gseed = base + 7919 * len(doc["launches"])
        target = synthetic.random_target(gseed)  # geometry, mem_regs and weight_rows
        label = (target.geometry + (f" mem_regs={target.mem_regs}" if target.mem_regs else "")
                 + (f" weight_rows={target.weight_rows}" if target.weight_rows > 1 else ""))
        items, models = [], []
        for _ in range(args.batch):
            seed = base * 100003 + net
            net += 1
            model = synthetic.random_network(seed, max_hw=args.max_hw, max_c=args.max_c,
                                             max_out_c=args.max_out_c,
                                             max_hidden=args.max_hidden)
            folder = WORK / "random" / f"net-{seed}"
            # with a weight word per row, every other network is compiled for one image per
            # run, so that its dense layers are split across the rows or their groups spread
            # over them (program.mapping)
            one = target.weight_rows > 1 and net % 2 == 0
            synthetic.write_folder(model, target, folder, max_batch=1 if one else None)
            items.append((backends.load_model(folder),
                          synthetic.random_pixels(seed, model, args.images)))
            models.append((seed, model))
        # golden, cpu and amaranth per network first; a network the accelerator refuses
        # (an AcceleratorError from the host link) is recorded and left out of the launch
        t_am = 0.0
        am_cycles = 0
        soft = []
        for (mf, px), (seed, model) in zip(items, models, strict=True):
            ref = backends.run(mf, px, "golden")
            cpu = backends.run(mf, px, "cpu")
            t1 = time.perf_counter()
            try:
                am = backends.run(mf, px, "amaranth", seed=seed, idle=args.idle,
                                  backpressure=args.backpressure, progress=False)
            except UserError as e:
                doc["errors"].append({"seed": seed, "geometry": label,
                                      "backend": "amaranth", "error": str(e)})
                continue
            finally:
                t_am += time.perf_counter() - t1
            am_cycles += am.sim_cycles or 0
            soft.append((mf, px, seed, model, ref, [cpu, am]))
        t0 = time.perf_counter()
        try:
            icarus = backends.run_rtl_batch("icarus", [(mf, px) for mf, px, *_ in soft],
                                            seed=gseed, idle=args.idle,
                                            backpressure=args.backpressure, progress=False)
        except UserError as e:
            doc["errors"].append({"seeds": [x[2] for x in soft], "geometry": label,
                                  "backend": "icarus", "error": str(e)})
            icarus = [None] * len(soft)
        t_icarus = time.perf_counter() - t0
        ic_cycles = sum(o.sim_cycles or 0 for o in icarus if o is not None)
        for (mf, _px, seed, model, ref, outs), ic in zip(soft, icarus, strict=True):
            if ic is None:
                continue
            for out in (*outs, ic):
                a = agreement(model, ref, out)
                if not a.exact:
                    doc["mismatches"].append({"seed": seed, "geometry": label,
                                              "backend": out.backend, "first": str(a.first)})
            for layer in model.layers:
                mode = (f"{'signed' if layer.signed_input else 'unsigned'}-{layer.in_bits}b/"
                        f"{layer.kind}/{layer.output}{'+pool' if layer.pool_k > 1 else ''}")
                doc["modes"][mode] = doc["modes"].get(mode, 0) + 1
            doc["layers"] += len(model.layers)
            # layers whose own outputs were compared bit by bit (readable hidden maps and
            # the scores); an overwritten early hidden map is checked only through its effect
            doc["layers_observed"] += sum(readable_layers(mf)) + 1
            descs = program.decode_memories(mf.memories)[1]
            doc["split_layers"] += sum(d["ksplit"] for d in descs)
            doc["spread_layers"] += sum(d["ospread"] for d in descs)
            conv = [d for d in descs if d["ospread"] and d["out_h"] * d["out_w"] > 1]
            doc["spread_conv_layers"] += len(conv)
            doc["spread_pooled_layers"] += sum(d["passes"] > 1 for d in conv)
            doc["networks"] += 1
            bar.update(len(model.layers))
        doc["launches"].append({
            "geometry": label, "networks": len(items),
            "icarus_wall_s": round(t_icarus, 2), "icarus_sim_cycles": int(ic_cycles),
            "icarus_cycles_per_s": round(ic_cycles / max(1e-9, sum(
                o.info.get("sim_s", 0) for o in icarus if o is not None)), 1),
            "amaranth_wall_s": round(t_am, 2), "amaranth_sim_cycles": int(am_cycles),
            "amaranth_cycles_per_s": round(am_cycles / max(1e-9, t_am), 1)})
        doc["wall_s"] = round(time.perf_counter() - t_start, 1)
        _write("random", doc)
        if args.deadline and time.time() > args.deadline:
            break
    bar.close()
    doc["partial"] = doc["layers"] < args.layers
    doc["geometries"] = sorted({la["geometry"] for la in doc["launches"]})
    _write("random", doc)
    _summary([
        f"## random layers ({'PARTIAL' if doc['partial'] else 'complete'}) -- "
        f"{doc['env']['date']}",
        f"command: {doc['command']}",
        f"{doc['layers']} random layers ({doc['layers_observed']} with their own outputs "
        f"compared bit by bit) in {doc['networks']} networks, "
        f"{len(doc['launches'])} Icarus launches, geometries {', '.join(doc['geometries'])}; "
        f"{doc['split_layers']} layers with their reduction split across the rows, "
        f"{doc['spread_layers']} with their column groups spread over them "
        f"({doc['spread_conv_layers']} of them conv layers, a tile per output pixel, "
        f"{doc['spread_pooled_layers']} pooled)",
        f"backends golden, cpu, amaranth, icarus; mismatches: {len(doc['mismatches'])}; "
        f"networks refused or failed: {len(doc['errors'])}"
        + "".join(f"\n  error: {e}" for e in doc["errors"][:10]),
        "layer modes: " + ", ".join(f"{k}: {v}" for k, v in sorted(doc["modes"].items())),
        f"wall {doc['wall_s']} s",
    ])
    return 0 if not (doc["mismatches"] or doc["errors"]) else 1


# ----- parts 2 and 3: full test sets -----------------------------------------------------
def _ensure_checkpoint(dataset: str, work: Path, train_args: list[str]) -> Path:
    """A checkpoint trained with ``train_args`` under ``work/trained`` (trained if missing)."""
    ckpt = work / "trained"
    if not (ckpt / "checkpoint.pt").is_file():
        subprocess.run([sys.executable, "-m", "xnorflow", "train", "--dataset", dataset,
                        *train_args, "--quiet", "-o", str(ckpt)], check=True)
    return ckpt


def flatten_input(model):
    """The same network with its first (dense) layer reading one ``1 x 1 x H*W*C`` pixel.

    A dense layer over an ``H x W x C`` map and over the flattened vector (HWC order) has the
    same ``K`` valid bits, weights and accumulators; only the packing differs: every input
    pixel is its own segment (a whole word for ``C = 1``) in the first layout, one segment of
    ``ceil(H*W*C / W)`` words in the second -- ``W`` times fewer words to upload and reduce.
    Images are reshaped to ``(N, 1, 1, H*W*C)`` alike. Equality with the original network is
    checked on the data (golden outputs identical) by :func:`part_dataset`.
    """
    import copy

    first = model.layers[0]
    if first.kind != "dense" or (first.in_h, first.in_w) == (1, 1):
        return model
    flat = copy.deepcopy(model)
    f = flat.layers[0]
    k = f.in_h * f.in_w * f.in_c
    f.weights = np.ascontiguousarray(f.weights.reshape(f.out_c, 1, 1, k))
    f.in_h = f.in_w = f.kh = f.kw = 1
    f.in_c = k
    flat.in_h, flat.in_w, flat.in_c = 1, 1, k
    flat.meta = {**flat.meta, "flattened_input_from": [model.in_h, model.in_w, model.in_c]}
    flat.validate()
    return flat


#: dataset parts: dataset, simulator, default target, training arguments of the checkpoint
DATASET_PARTS = {
    "digits": ("digits", "icarus", "up5k",
               ["--model", "mlp", "--widths", "128,64", "--in-bits", "4", "--epochs", "30"]),
    "fmnist": ("fashion-mnist", "verilator", "ecp5-85f", ["--model", "mlp", "--epochs", "5"]),
}


def _dataset_model(args, part: str):
    """The part's compiled model folder (trained and compiled unless ``--model``), its test
    images (``--limit``) in the folder's input shape, labels and golden outputs."""
    from xnorflow.sim import backends
    from xnorflow.sim.compare import agreement
    from xnorflow.sw import synthetic
    from xnorflow.sw.data import load_dataset
    from xnorflow.sw.targets import get_target

    dataset, _, default_target, train_args = DATASET_PARTS[part]
    target = args.target or default_target
    ds = load_dataset(dataset)
    x, y = ds.x_test, ds.y_test
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    if args.model:
        folder = Path(args.model)
        orig = backends.load_model(folder).model
    else:
        from xnorflow.sw.lower import lower_checkpoint

        ckpt = _ensure_checkpoint(dataset, WORK / part, train_args)
        orig = lower_checkpoint(ckpt)
        folder = WORK / part / f"compiled-flat-{target}"
        synthetic.write_folder(flatten_input(orig), get_target(target), folder)
    mf = backends.load_model(folder)
    if (mf.model.in_h, mf.model.in_w, mf.model.in_c) != x.shape[1:]:
        x = x.reshape(len(x), mf.model.in_h, mf.model.in_w, mf.model.in_c)
    ref = _golden_batched(mf, x)
    flat_check = None
    if (orig.in_h, orig.in_w) != (mf.model.in_h, mf.model.in_w):
        # the re-layout is exact; check it on the first images (the golden model of the
        # 28x28-segment layout is slow and memory-hungry)
        n = min(len(y), args.check_images)
        g0 = _golden_batched(None, ds.x_test[:n], model=orig)
        sub = backends.Outputs("flat", ref.predictions[:n], ref.scores[:n],
                               [a[:n] for a in ref.activations])
        same = agreement(mf.model, g0, sub)
        flat_check = {"images": n, "exact": same.exact}
        if not same.exact:
            raise SystemExit(f"flattened model differs from the original: {same.first}")
    return folder, mf, x, y, ref, flat_check


def _one_image_folder(folder: Path, mf) -> Path:
    """``mf``'s model compiled again for one image per run (``max_batch`` 1: the compiler may
    split dense layers across the rows or spread column groups over them) beside ``folder``,
    as ``<folder>-b1``."""
    from xnorflow.sw import synthetic

    one = folder.with_name(folder.name + "-b1")
    synthetic.write_folder(mf.model, mf.target, one, max_batch=1)
    return one


def _per_start(args, mf) -> int:
    """Images per START: ``--images-per-start``, or (0) the target's R rows; the host caps
    it at the program's ``max_batch``."""
    return args.images_per_start or mf.target.rows


def part_dataset(args, part: str) -> int:
    from xnorflow.sim import backends
    from xnorflow.sw import synthetic
    from xnorflow.sw.targets import get_target

    dataset, sim, default_target, _ = DATASET_PARTS[part]
    target = args.target or default_target
    folder, mf, x, y, ref, flat_check = _dataset_model(args, part)
    max_batch = None
    if args.images_per_start == 1 and not args.model:
        # one image per START: the program for one image (max_batch 1), so that the compiler
        # may split dense layers across the rows or spread their groups over them, as
        # `xnorflow compile --max-batch 1` does; its results go to rtl.<part>-1.json
        max_batch = 1
        folder = _one_image_folder(folder, mf)
        mf = backends.load_model(folder)
        part = f"{part}-1"
    doc = {"part": part, "partial": True, "dataset": dataset, "simulator": sim,
           "model": str(folder), "model_meta": mf.model.meta, "target": mf.target.name,
           "geometry": mf.target.geometry, "images": int(len(y)), "env": _env(),
           "command": " ".join(sys.argv)}
    if flat_check is not None:
        doc["flattened_equals_original"] = flat_check
    t0 = time.perf_counter()
    chunks, done = [], 0
    step = args.chunk or len(y)
    while done < len(y):
        px = x[done: done + step]
        try:
            mf = backends.load_model(folder)
        except UserError as e:
            # other engineers change the program format or a target while this runs: the
            # folder is then refused ("recompile it"); recompile it from the same IR
            if args.model or "recompile" not in str(e):
                raise
            print(f"recompiling {folder} after: {e}", file=sys.stderr, flush=True)
            synthetic.write_folder(mf.model, get_target(target), folder, max_batch=max_batch)
            mf = backends.load_model(folder)
            doc.setdefault("recompiled", []).append({"at_image": done, "reason": str(e)})
        try:
            outs = backends.run_rtl_batch(sim, [(mf, px)], seed=args.seed, progress=True,
                                          deadline=args.deadline, batch=_per_start(args, mf))
        except UserError as e:
            doc["stopped_by"] = str(e)
            break
        if not outs:
            break
        out = outs[0]
        chunks.append(out)
        done += len(out.predictions)
        _partial_doc(doc, mf, chunks, ref, y, time.perf_counter() - t0, done)
        _write(part, doc)
        if len(out.predictions) < len(px) or (args.deadline and time.time() > args.deadline):
            break
    doc["partial"] = done < len(y)
    _write(part, doc)
    return _dataset_summary(part, doc)


def part_batching(args) -> int:
    """The first ``--limit`` images of ``--dataset``'s part one per START, compiled for one
    image (``max_batch`` 1: the compiler may split dense layers across the rows or spread
    their column groups over them), and then
    batched (``--images-per-start``, default R; the program for the target's default
    batch): bit-exact vs golden both ways, cycles per image."""
    from xnorflow.sim import backends
    from xnorflow.sim.compare import agreement
    from xnorflow.sw import program

    part = args.dataset
    dataset, sim, _, _ = DATASET_PARTS[part]
    folder, mf, x, y, ref, _ = _dataset_model(args, part)
    one_folder = _one_image_folder(folder, mf)
    mf1 = backends.load_model(one_folder)
    doc = {"part": "batching", "dataset": dataset, "simulator": sim, "model": str(folder),
           "model_one": str(one_folder),
           "target": mf.target.name, "geometry": mf.target.geometry, "images": int(len(y)),
           "env": _env(), "command": " ".join(sys.argv), "runs": []}

    # one launch (one build, one design): the images one per START, then again batched
    outs = backends.run_rtl_batch(sim, [(mf1, x), (mf, x)], seed=args.seed, progress=False,
                                  batch=[1, _per_start(args, mf)])
    for out, m in zip(outs, (mf1, mf), strict=True):
        a = agreement(mf.model, ref, out)
        header, descs = program.decode_memories(m.memories)
        doc["runs"].append({
            "images_per_start": out.info["images_per_start"],
            "program_max_batch": int(header["max_batch"]),
            "split_layers": sum(d["ksplit"] for d in descs),
            "spread_layers": sum(d["ospread"] for d in descs),
            "bit_exact": a.exact, "samples_agree": a.samples_agree,
            "bits_compared": a.bits_compared,
            "first_mismatch": None if a.first is None else str(a.first),
            "accelerator_cycles_per_image": float(out.cycles.mean()),
            # the whole host link (inputs, START, status polls, results, hidden maps), less
            # the one-off load of the model's memories at the start of the item
            "sim_cycles_per_image": (out.sim_cycles - out.info["load_cycles"]) / len(y),
            "load_cycles": out.info["load_cycles"],
            "utilisation": mf.model.binary_macs / (mf.target.rows * mf.target.cols
                                                   * mf.target.width) / out.cycles.mean(),
            "loop_s": out.info["loop_s"], "build_s": out.info["build_s"]})
    one, many = doc["runs"]
    doc["sim_cycles_ratio"] = one["sim_cycles_per_image"] / many["sim_cycles_per_image"]
    _write(f"batching-{part}", doc)
    _summary([
        f"## batched STARTs: first {len(y)} {dataset} test images on {sim} -- "
        f"{doc['env']['date']}",
        f"command: {doc['command']}",
        f"model {folder} (target {doc['target']}, {doc['geometry']})",
        *(f"{r['images_per_start']} image(s) per START (program for {r['program_max_batch']}, "
          f"{r['split_layers']} layer(s) split across the rows, {r['spread_layers']} "
          f"spread over them): bit-exact vs golden "
          f"{r['samples_agree']}/{len(y)} ({r['bits_compared']} hidden bits), accelerator "
          f"{r['accelerator_cycles_per_image']:.1f} cycles/image (utilisation "
          f"{100 * r['utilisation']:.2f} %), with the host link "
          f"{r['sim_cycles_per_image']:.1f} simulated cycles/image (model load "
          f"{r['load_cycles']} cycles not counted), {r['loop_s']:.1f} s in the simulator"
          for r in doc["runs"]),
        f"simulated cycles per image, one per START / batched: {doc['sim_cycles_ratio']:.2f}x",
    ])
    return 0 if one["bit_exact"] and many["bit_exact"] else 1


def _dataset_summary(part: str, doc: dict) -> int:
    sim, dataset, folder, y = doc["simulator"], doc["dataset"], doc["model"], doc["images"]
    _summary([
        f"## {part}: {dataset} test set on {sim} ({'PARTIAL' if doc['partial'] else 'complete'})"
        f" -- {doc['env']['date']}",
        f"command: {doc['command']}",
        f"model {folder} (target {doc['target']}, {doc['geometry']})",
        *([f"stopped early: {doc['stopped_by']}"] if doc.get("stopped_by") else []),
        f"{doc['images_run']}/{y} images, bit-exact vs golden: "
        f"{doc['samples_agree']}/{doc['images_run']} (first mismatch: {doc['first_mismatch']})",
        f"accuracy {sim} {100 * doc['accuracy']:.2f} %, "
        f"golden {100 * doc['golden_accuracy']:.2f} %",
        f"{doc.get('images_per_start', 1)} image(s) per START; accelerator cycles/image "
        f"{doc['cycles_per_image']:.1f}, utilisation {100 * doc['utilisation']:.2f} %; "
        f"with the host link {doc['sim_cycles'] / max(1, doc['images_run']):.1f} "
        "simulated cycles/image (model loads included)",
        f"wall {doc['wall_s']:.1f} s ({doc['images_per_s_wall']:.2f} images/s), simulated "
        f"{doc['sim_cycles']} cycles in {doc['sim_s']:.1f} s of simulation = "
        f"{doc['sim_cycles_per_s']:.0f} cycles/s",
    ])
    return 0 if doc["first_mismatch"] is None else 1


def _golden_batched(mf, x, model=None, batch: int = 250):
    """Golden model in batches (a whole test set at once can take tens of GB)."""
    from xnorflow.sim.backends import Outputs
    from xnorflow.sw import golden

    model = model if model is not None else mf.model
    parts = [golden.run(model, x[i:i + batch]) for i in range(0, len(x), batch)]
    acts = [np.concatenate([p.activations[i] for p in parts])
            for i in range(len(parts[0].activations))]
    return Outputs("golden", np.concatenate([p.predictions for p in parts]),
                   np.concatenate([p.scores for p in parts]), acts)


def _partial_doc(doc, mf, chunks, ref, y, wall, done) -> None:
    from xnorflow.sim.backends import Outputs
    from xnorflow.sim.compare import agreement

    n_act = len(chunks[0].activations)
    acts = [None if any(c.activations[i] is None for c in chunks)
            else np.concatenate([c.activations[i] for c in chunks]) for i in range(n_act)]
    out = Outputs(chunks[0].backend, np.concatenate([c.predictions for c in chunks]),
                  np.concatenate([c.scores for c in chunks]), acts,
                  cycles=np.concatenate([c.cycles for c in chunks]))
    r = Outputs("golden", ref.predictions[:done], ref.scores[:done],
                [a[:done] for a in ref.activations])
    a = agreement(mf.model, r, out)
    t = mf.target
    cyc = float(out.cycles.mean())
    sim_cycles = int(sum(c.sim_cycles or 0 for c in chunks))
    sim_s = float(sum(c.info.get("sim_s", 0) for c in chunks))
    doc.update({
        "images_run": int(done), "samples_agree": a.samples_agree,
        "bits_compared": a.bits_compared, "bits_differ": a.bits_differ,
        "scores_differ": a.scores_differ, "predictions_differ": a.predictions_differ,
        "first_mismatch": None if a.first is None else str(a.first),
        "accuracy": float((out.predictions == y[:done]).mean()),
        "golden_accuracy": float((ref.predictions[:done] == y[:done]).mean()),
        "cycles_per_image": cyc, "cycles_min": int(out.cycles.min()),
        "cycles_max": int(out.cycles.max()),
        "utilisation": mf.model.binary_macs / (t.rows * t.cols * t.width) / cyc,
        "wall_s": wall, "images_per_s_wall": done / wall,
        "sim_cycles": sim_cycles, "sim_s": sim_s,
        "sim_cycles_per_s": sim_cycles / sim_s if sim_s else 0.0,
        "build_s": [c.info.get("build_s") for c in chunks],
        "images_per_start": max(c.info.get("images_per_start", 1) for c in chunks),
    })


def part_speed(args) -> int:
    """Icarus vs Verilator on the same design and images (the digits network on up5k)."""
    from xnorflow.sim import backends
    from xnorflow.sw.data import load_dataset

    folder = WORK / "digits" / "compiled-flat-up5k"
    if not (folder / "manifest.json").is_file():
        raise SystemExit(f"{folder}: run --part digits first (it compiles the network)")
    mf = backends.load_model(folder)
    n = args.limit or 30
    x = load_dataset("digits").x_test[:n].reshape(n, mf.model.in_h, mf.model.in_w,
                                                  mf.model.in_c)
    ref = _golden_batched(mf, x)
    doc = {"part": "speed", "model": str(folder), "geometry": mf.target.geometry,
           "images": n, "env": _env(), "command": " ".join(sys.argv), "simulators": {}}
    for sim in ("icarus", "verilator"):
        out = backends.run(mf, x, sim, seed=args.seed, progress=False)
        exact = bool(np.array_equal(out.scores, ref.scores) and all(
            a is None or np.array_equal(a, b) for a, b in zip(out.activations, ref.activations,
                                                              strict=True)))
        loop_s = out.info.get("loop_s") or out.info["sim_s"]
        doc["simulators"][sim] = {
            "sim_cycles": int(out.sim_cycles), "launch_s": out.info["sim_s"],
            "loop_s": loop_s, "cycles_per_s": out.sim_cycles / loop_s,
            "cycles_per_s_with_startup": out.sim_cycles / out.info["sim_s"],
            "build_s": out.info["build_s"], "cycles_per_image": float(out.cycles.mean()),
            "bit_exact": exact}
        _write("speed", doc)
    ic, vl = doc["simulators"]["icarus"], doc["simulators"]["verilator"]
    doc["verilator_over_icarus"] = vl["cycles_per_s"] / ic["cycles_per_s"]
    _write("speed", doc)
    _summary([
        f"## simulator speed, same design and images -- {doc['env']['date']}",
        f"command: {doc['command']}",
        f"digits network on {mf.target.geometry}, {n} images, host link with the driver",
        *(f"{k}: {v['sim_cycles']} cycles in {v['loop_s']:.1f} s of simulation = "
          f"{v['cycles_per_s']:.0f} cycles/s ({v['cycles_per_s_with_startup']:.0f} counting "
          f"the {v['launch_s']:.1f} s launch with start-up; build {v['build_s']:.1f} s), "
          f"bit-exact {v['bit_exact']}"
          for k, v in doc["simulators"].items()),
        f"Verilator / Icarus: {doc['verilator_over_icarus']:.1f}x",
    ])
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("random", "digits", "fmnist", "speed", "batching",
                                      "all"), default="all")
    p.add_argument("--layers", type=int, default=1000)
    p.add_argument("--images", type=int, default=1, help="images per random network")
    p.add_argument("--batch", type=int, default=25, help="random networks per Icarus launch")
    p.add_argument("--max-hw", type=int, default=6)
    p.add_argument("--max-c", type=int, default=40)
    p.add_argument("--max-out-c", type=int, default=24)
    p.add_argument("--max-hidden", type=int, default=3, help="hidden layers per network")
    p.add_argument("--idle", type=float, default=0.1)
    p.add_argument("--backpressure", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    p.add_argument("--model", default=None, help="compiled model folder for digits/fmnist")
    p.add_argument("--target", default=None, help="target to compile for (digits: up5k, "
                   "fmnist: ecp5-85f)")
    p.add_argument("--limit", type=int, default=None, help="only the first N test images")
    p.add_argument("--check-images", type=int, default=1000,
                   help="images on which the flat re-layout is checked equal to the original")
    p.add_argument("--images-per-start", type=int, default=0,
                   help="digits/fmnist/batching: images per START; 0 (default): the "
                   "target's R rows, capped at the program's max_batch; 1: one per START")
    p.add_argument("--dataset", choices=tuple(DATASET_PARTS), default="fmnist",
                   help="batching: whose network and test images")
    p.add_argument("--chunk", type=int, default=None,
                   help="images per simulator launch (results written after each)")
    p.add_argument("--deadline", type=float, default=None,
                   help="UNIX time after which to stop and write partial results")
    p.add_argument("--summarize", action="store_true",
                   help="digits/fmnist: print the summary of the results JSON already written")
    args = p.parse_args(argv)
    if args.summarize:
        part = args.part + ("-1" if args.images_per_start == 1 else "")
        return _dataset_summary(part, json.loads((RESULTS / f"rtl.{part}.json").read_text()))
    print(f"benchmarks/rtl.py seed {args.seed}", flush=True)
    rc = 0
    if args.part in ("random", "all"):
        rc |= part_random(args)
    if args.part in ("digits", "all"):
        rc |= part_dataset(args, "digits")
    if args.part == "speed":
        rc |= part_speed(args)
    if args.part in ("fmnist", "all"):
        rc |= part_dataset(args, "fmnist")
    if args.part == "batching":
        rc |= part_batching(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
