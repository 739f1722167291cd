"""Whole-network cycles and utilisation of the accelerator (sequencer + broadcast array, v2).

Utilisation = binary MACs (every bit-plane counts) / (R * C * W) / cycles of one run.
Cycles come from the whole-network performance model (``sw/perf.py: network_perf``), which
is validated here against Amaranth simulations of the complete accelerator (and exactly, by
``tests/hw/test_sequencer.py``). Weights are random (``sw/synthetic.py``): cycle counts
depend only on the layer shapes, which are those of the trained models
(``sw/models.py``: digits MLP 64-256-256-10 on 8x8 8-bit pixels; Fashion-MNIST CNN
``--widths 32,64:256``). The ceiling section prints ``sw/perf.py: network_bound``: the
utilisation no compiler mapping can pass on each array and memory ports, and with
``hw=WhatIf(...)`` how far each hardware change (a weight word per row: built on
``ecp5-85f``, ``Target.weight_rows``; a whole tile retired per cycle, bit-planes packed per
word: not built) would lift it.

Usage: .venv/bin/python benchmarks/network.py [--no-sim]
Writes benchmarks/results/network.txt and network.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from xnorflow.sw import files, golden, perf, program, synthetic
from xnorflow.sw.errors import UserError
from xnorflow.sw.targets import TARGETS, sim_target

OUT = Path(__file__).resolve().parent / "results"


def digits_mlp(seed=0):
    return synthetic.random_mlp(sizes=(64, 256, 256, 10), in_shape=(8, 8, 1), in_bits=8,
                                seed=seed, batch=16)


def fashion_cnn(seed=0):
    return synthetic.random_cnn(in_shape=(28, 28, 1), convs=((32, 3, 1, 1, 2), (64, 3, 1, 1, 2)),
                                dense=(256, 10), in_bits=8, seed=seed, batch=4)


def fashion_cnn_wide(seed=0):
    """A conv-dominated Fashion-MNIST-sized CNN (VGG-style), where reuse is high."""
    return synthetic.random_cnn(in_shape=(28, 28, 1),
                                convs=((64, 3, 1, 1, 1), (64, 3, 1, 1, 2), (128, 3, 1, 1, 1),
                                       (128, 3, 1, 1, 2)),
                                dense=(10,), in_bits=8, seed=seed, batch=2)


MODELS = {
    "digits-mlp": (digits_mlp, "64(8x8 px)-256-256-10, 8-bit input"),
    "fmnist-cnn": (fashion_cnn, "28x28 8-bit, conv32-pool, conv64-pool, fc256, fc10"),
    "fmnist-cnn-wide": (fashion_cnn_wide, "28x28 8-bit, conv64, conv64-pool, conv128, "
                                          "conv128-pool, fc10"),
}

REASONS = {
    "digits-mlp": "dense layers: one image fills 1 of R rows (a batch of R fills them all; "
                  "on ecp5-85f, a weight word per row, the hidden layers' column groups are "
                  "spread over the rows instead); each layer's fetch, prologue and drain "
                  "(43 cycles on ecp5-85f) are long beside its 32 to 64 beats; 10 classes "
                  "leave 6 of 16 / 2 of 8 columns idle in the last layer",
    "fmnist-cnn": "the first layer (1 grey channel: 9 window bits per W-bit word, 8 bit-planes) "
                  "and, without a batch, the fc256 layer (1 of R rows; on ecp5-85f its column "
                  "groups spread over the rows: a weight word and a threshold word per row) "
                  "dominate; conv1 fills the array (on ecp5-85f at batch 1 its 49 pooled "
                  "pixels are spread, a pixel per tile with its 8 column groups over the 8 "
                  "rows, instead of 7 tiles of 8 rows, the last with 1 pixel; 99.7 % at batch "
                  "8)",
    "fmnist-cnn-wide": "conv layers with >= 64 channels fill every row, column and bit; "
                       "the first layer and the 1-row fc10 are the remaining loss",
}

# Simulated validation cases: (model key or small maker, target)
SIM_CASES = [  # (model, target geometry, batch)
    ("digits-mlp", "up5k", 1),
    ("digits-mlp", "up5k", TARGETS["up5k"].rows),
    ("digits-mlp", "ecp5-85f", 1),
    ("digits-mlp", "ecp5-85f", 8),
    ("cnn-8x8", "sim", 1),
    ("fmnist-cnn", "ecp5-85f", 1),
]


def small_cnn(seed=0):
    return synthetic.random_cnn(in_shape=(8, 8, 1), convs=((8, 3, 1, 1, 2), (16, 3, 1, 1, 1)),
                                dense=(10,), in_bits=8, seed=seed)


def geometry_target(name):
    """The target's geometry, accumulator width and pipelining with unlimited
    memories (cycles depend on the geometry and the pipelining, not on the capacities)."""
    t = TARGETS[name]
    sim = sim_target(t.rows, t.cols, t.width, name=f"{name}-geometry",
                     weight_rows=t.weight_rows)
    return dataclasses.replace(t, name=sim.name, memories=sim.memories, board=None,
                               description=sim.description)


def simulate(model, target, batch=1):
    """Cycles of one run of ``batch`` images on the simulated accelerator, checked against
    the golden model."""
    from amaranth.sim import Simulator

    from xnorflow.hw.accelerator import Accelerator
    from xnorflow.hw.link import AcceleratorDriver, AmaranthStreamTransport

    mems = program.build_memories(model, target, max_batch=batch)
    imgs = synthetic.random_images(batch, model.in_h, model.in_w, model.in_c, seed=3)
    gold = golden.run(model, imgs)
    dut = Accelerator(target, mems)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    out = {}

    async def tb(ctx):
        drv = AcceleratorDriver(AmaranthStreamTransport(ctx, dut),
                                {n: w for n, (w, _) in target.memories.items()})
        drv.header, _ = program.decode_program(mems[0].words)
        res = await drv.classify_batch(imgs)
        st = await drv.status()
        out.update(cycles=st.cycles, ok=all(
            scores == gold.scores[i].tolist() and cls == int(gold.predictions[i])
            for i, (cls, scores) in enumerate(res)))

    sim.add_testbench(tb)
    sim.run()
    return out


#: ULX3S geometries (R, C, W, weight_rows) for the 40,000 images/s question, beside the one built
ULX3S_GEOMETRIES = ((8, 8, 32, 8), (8, 16, 32, 1), (8, 16, 32, 8), (4, 32, 32, 1),
                    (4, 32, 32, 4), (8, 32, 32, 1), (2, 32, 32, 2))


def ulx3s_geometries(model, fmax_mhz, say, data):
    """The Fashion-MNIST CNN at batch 1 on other geometries with the ULX3S target's memories
    (weights 1 Mbit in words of ``weight_rows x C x W`` bits, the other depths as built):
    the compiler's cycles, the block RAMs :func:`xnorflow.hw.memories.block_rams` estimates
    (the ECP5-85F has 208), and the clock 40,000 images/s would need. Perf model only: none
    of these but the first is built, so their Fmax is unknown."""
    from xnorflow.hw.memories import block_rams
    from xnorflow.sw.boards import board_of_target

    base = TARGETS["ecp5-85f"]
    have = board_of_target(base.name).brams
    built = base.rows * base.cols * base.width
    conv0 = model.layers[0]
    # the built target's depths; the weights keep their bits (1 Mbit) in words of another width
    depths = {n: d for n, (_, d) in base.memories.items()}
    weight_bits = base.word_bits("weights") * depths["weights"]
    say("ULX3S geometries for the 40,000 images/s goal: fmnist-cnn, batch 1, the compiler's")
    say("mapping on each (sw.perf.network_perf), block RAMs as hw.memories.block_rams estimates")
    say(f"them ({have} on the ECP5-85F), weights 1 Mbit as built; the first row is the one "
        "built.")
    px = conv0.conv_h * conv0.conv_w
    say(f"At one result row of C columns per cycle, conv0's {px} pixels x {conv0.out_c} "
        f"channels take")
    say(f"{px} x {conv0.out_c} / C cycles: more columns, not more rows, shorten it. Not built: "
        "Fmax unknown.")
    say("'EBR-ts': without the thresholds and scores memories, whose words are C lanes of 24")
    say("and 23 bits (C/1.5 blocks of 512 x 36 each) though the CNN needs few words of them")
    say("(a word per column group, one score word): in LUT RAM they would cost no block RAM.")
    say(f"  {'RxCxW':9s} {'w_rows':>6s} {'MACs':>5s} {'cycles':>7s} {'util':>6s} "
        f"{'EBR':>4s} {'EBR-ts':>5s} {'fits':>4s}  MHz for 40,000/s  images/s at {fmax_mhz} MHz")
    for R, C, W, wr in ULX3S_GEOMETRIES:
        widths = sim_target(R, C, W, weight_rows=wr).memories
        mems = {n: (w, weight_bits // w if n == "weights" else depths[n])
                for n, (w, _) in widths.items()}
        t = dataclasses.replace(base, name=f"ulx3s-{R}x{C}x{W}", rows=R, cols=C, width=W,
                                weight_rows=wr, memories=mems)
        try:
            program.check_fits(model, t)
            fits = True
        except UserError:
            fits = False
        brams = block_rams(t)
        ebr = sum(brams.values())
        small = ebr - brams["thresholds"] - brams["scores"]
        p = perf.network_perf(model, t)
        say(f"  {t.geometry:9s} {wr:6d} {R * C * W / built:4.0f}x {p.cycles:7d} "
            f"{100 * p.utilisation:5.1f}% {ebr:4d} {small:5d} "
            f"{'yes' if fits and ebr <= have else 'no':>4s}"
            f"  {40000 * p.cycles / 1e6:16.0f}  {fmax_mhz * 1e6 / p.cycles:8.0f}")
        data.setdefault("ulx3s_geometries", []).append({
            "geometry": t.geometry, "weight_rows": wr, "macs_vs_built": R * C * W / built,
            "cycles": p.cycles, "utilisation": p.utilisation, "block_rams": ebr,
            "memories_fit": fits, "mhz_for_40000": 40000 * p.cycles / 1e6})


def best_geometries(models, say, data):
    """Each model's best batch-1 utilisation over array geometries (perf model, unlimited
    memories, the compiler's mapping; ``ecp5-85f``'s accumulators and pipelining): whether
    any array of this architecture reaches 85 % for one image."""
    base = TARGETS["ecp5-85f"]
    space = [(R, C, W, wr) for W in (16, 32) for R in (1, 2, 4, 8) for C in (2, 4, 8, 16)
             for wr in sorted({1, R})]
    say(f"Best batch-1 utilisation over {len(space)} geometries (R 1-8, C 2-16, W 16/32, "
        "weight_rows 1 or R;")
    say("perf model, unlimited memories, ecp5-85f's pipelining), and its ceiling")
    say("(sw.perf.network_bound):")
    for key, model in models.items():
        best = None
        for R, C, W, wr in space:
            t = dataclasses.replace(sim_target(R, C, W, name=f"{R}x{C}x{W}", weight_rows=wr),
                                    acc_bits=base.acc_bits, mem_regs=base.mem_regs,
                                    popcount_levels=base.popcount_levels)
            u = perf.network_perf(model, t).utilisation
            if best is None or u > best[0]:
                best = (u, t)
        u, t = best
        ceil = perf.network_bound(model, t).utilisation
        say(f"  {key:16s} {100 * u:5.1f}% on {t.geometry} (weight_rows {t.weight_rows}), "
            f"ceiling there {100 * ceil:5.1f}%")
        data.setdefault("best_geometry", []).append({
            "model": key, "geometry": t.geometry, "weight_rows": t.weight_rows,
            "utilisation": u, "ceiling": ceil})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-sim", action="store_true", help="skip the simulations")
    args = ap.parse_args()
    lines: list[str] = []
    data: dict = {"rows": [], "validation": []}

    def say(s=""):
        print(s)
        lines.append(s)

    say("# Whole-network utilisation (benchmarks/network.py)")
    say()
    say("utilisation = binary MACs / (R*C*W) / cycles; cycles from sw.perf.network_perf")
    say("(validated against simulation below). Random weights, trained models' shapes.")
    say()
    header = (f"{'model':16s} {'target':9s} {'RxCxW':8s} {'fits':5s} {'batch':>5s} "
              f"{'MACs':>10s} {'cycles':>8s} {'cyc/img':>8s} {'util':>7s}")
    say(header)
    say("-" * len(header))
    models = {k: make() for k, (make, _) in tqdm(MODELS.items(), desc="models", leave=False)}
    for key, model in models.items():
        for tname in ("up5k", "hx8k", "ecp5-85f", "sim"):
            real = TARGETS[tname]
            for batch in sorted({1, real.rows}):
                why = None
                try:
                    program.check_fits(model, real, batch=batch)
                    fits = "yes"
                except UserError as e:
                    fits = "no"
                    why = str(e)
                p = perf.network_perf(model, geometry_target(tname), batch=batch)
                say(f"{key:16s} {tname:9s} {real.geometry:8s} {fits:5s} {batch:5d} "
                    f"{p.binary_macs:10d} {p.cycles:8d} {p.cycles / batch:8.0f} "
                    f"{100 * p.utilisation:6.1f}%")
                row = {"model": key, "target": tname, "geometry": real.geometry,
                       "fits": fits, "batch": batch, "binary_macs": p.binary_macs,
                       "cycles": p.cycles, "utilisation": p.utilisation,
                       "layers": [{"name": lp.name, "tiles": lp.tiles, "groups": lp.groups,
                                   "entries": lp.entries, "beats": lp.beats,
                                   "cycles": lp.cycles, "binary_macs": lp.binary_macs,
                                   "utilisation": lp.utilisation, "mapping": lp.mapping}
                                  for lp in p.layers]}
                if why:
                    row["why_not"] = why
                data["rows"].append(row)
    say()
    for key, (_, desc) in MODELS.items():
        say(f"{key}: {desc}")
        say(f"  why: {REASONS[key]}")
    say()
    for batch in (1, 8):
        say(f"Per layer on ecp5-85f (8x8x32), batch {batch}:")
        for key, model in models.items():
            p = perf.network_perf(model, geometry_target("ecp5-85f"), batch=batch)
            say(f"  {key}: " + ", ".join(
                f"{lp.name}{'' if lp.mapping == 'plain' else ' ' + lp.mapping} {lp.cycles} cyc "
                f"{100 * lp.utilisation:.1f}%" for lp in p.layers))
    say()
    say("Ceiling: what no mapping beats on these arrays (sw.perf.network_bound: per layer the")
    say("largest of PE slots = dot-product beats / (R*C), weight words / weight_rows per cycle")
    say("(1, or R on ecp5-85f), results / C per cycle; per-layer fetch/prologue/drain left out).")
    say("'now' is the compiler's mapping.")
    for key, model in models.items():
        for tname in ("up5k", "hx8k", "ecp5-85f"):
            t = geometry_target(tname)
            for batch in sorted({1, t.rows}):
                p = perf.network_perf(model, t, batch=batch)
                b = perf.network_bound(model, t, batch=batch)
                say(f"  {key:16s} {tname:9s} batch {batch}: now {100 * p.utilisation:5.1f}%  "
                    f"ceiling {100 * b.utilisation:5.1f}%  (" + ", ".join(
                        f"{lb.name} >= {lb.cycles} {lb.limit}"
                        + (f" {100 * lb.packing:.0f}% packed" if lb.packing < 1 else "")
                        for lb in b.layers) + ")")
                data.setdefault("ceiling", []).append({
                    "model": key, "target": tname, "batch": batch, "now": p.utilisation,
                    "ceiling": b.utilisation, "bound_cycles": b.cycles, "cycles": p.cycles,
                    "layers": [{"name": lb.name, "slots": lb.slot_cycles,
                                "weights": lb.weight_cycles, "results": lb.result_cycles,
                                "limit": lb.limit, "packing": lb.packing}
                               for lb in b.layers]})
    synth = json.loads((OUT / "synth.json").read_text())["builds"]
    ulx = next(b for b in synth if b["key"] == "ulx3s-85f 8x8x32 accelerator")
    fm = models["fmnist-cnn"]
    t = geometry_target("ecp5-85f")
    say(f"  fmnist-cnn on the ULX3S at its measured Fmax ({ulx['fmax_mhz']} MHz, "
        "benchmarks/results/synth.json):")
    for batch in (1, t.rows):
        p = perf.network_perf(fm, t, batch=batch)
        b = perf.network_bound(fm, t, batch=batch)
        say(f"    batch {batch}: now {ulx['fmax_mhz'] * 1e6 * batch / p.cycles:7.0f} images/s, "
            f"ceiling {ulx['fmax_mhz'] * 1e6 * batch / b.cycles:7.0f} images/s")
    full = fm.binary_macs / (t.rows * t.cols * t.width)
    say(f"    every MAC slot busy: {full:.0f} cycles/image -> 40,000 images/s needs "
        f"{40000 * full / 1e6:.0f} MHz")
    data["ulx3s"] = {"fmax_mhz": ulx["fmax_mhz"], "cycles_per_image_full_array": full}
    say()
    say("What would lift the ceiling (sw.perf.network_bound with hw=WhatIf(...); each column the")
    say("ceiling with that change alone, 'all' with the three together):")
    say("  weights xR: a weight word per row each cycle (built on ecp5-85f: there it is 'as")
    say("  built'); results xR: the whole tile retired at once; packing: p bit-planes per word,")
    say("  plane b-j repeated 2^(p-1-j) times (exact); these two are not built.")
    def whatifs(R):  # the columns on an array of R rows
        return {"as built": perf.WhatIf(), "weights xR": perf.WhatIf(weight_words=R),
                "results xR": perf.WhatIf(result_rows=R),
                "packing": perf.WhatIf(plane_packing=True),
                "all": perf.WhatIf(weight_words=R, result_rows=R, plane_packing=True)}

    head = f"  {'model':16s} {'target':9s} {'batch':>5s} {'now':>6s} " + " ".join(
        f"{k:>11s}" for k in whatifs(1))
    say(head)
    for key, model in models.items():
        for tname in ("up5k", "hx8k", "ecp5-85f"):
            t = geometry_target(tname)
            hws = whatifs(t.rows)
            for batch in sorted({1, t.rows}):
                now = perf.network_perf(model, t, batch=batch).utilisation
                ceil = {k: perf.network_bound(model, t, batch=batch, hw=hw)
                        for k, hw in hws.items()}
                say(f"  {key:16s} {tname:9s} {batch:5d} {100 * now:5.1f}% " + " ".join(
                    f"{100 * b.utilisation:10.1f}%" for b in ceil.values()))
                data.setdefault("what_if", []).append({
                    "model": key, "target": tname, "batch": batch, "now": now,
                    **{k: b.utilisation for k, b in ceil.items()}})
    t = geometry_target("ecp5-85f")
    every = whatifs(t.rows)["all"]
    for batch in (1, t.rows):
        b = perf.network_bound(fm, t, batch=batch, hw=every)
        say(f"  fmnist-cnn on the ULX3S at {ulx['fmax_mhz']} MHz with all three, batch "
            f"{batch}: at most {ulx['fmax_mhz'] * 1e6 * batch / b.cycles:7.0f} images/s "
            f"(limits: " + ", ".join(f"{lb.name} {lb.limit}" for lb in b.layers) + "); "
            f"40,000 images/s needs >= {40000 * b.cycles / batch / 1e6:.0f} MHz")
    say()
    ulx3s_geometries(fm, ulx["fmax_mhz"], say, data)
    say()
    best_geometries(models, say, data)
    say()
    say("Other geometries (perf model only, memories assumed to fit), batch 1 / batch R:")
    for g in ((4, 16, 32), (2, 16, 32), (2, 8, 16), (2, 4, 16)):
        t = sim_target(*g, name="x".join(map(str, g)))
        cells = []
        for k, m in models.items():
            p1, pr = perf.network_perf(m, t), perf.network_perf(m, t, batch=g[0])
            cells.append(f"{k} {100 * p1.utilisation:5.1f}% / {100 * pr.utilisation:5.1f}%")
        say(f"  {t.geometry:8s} " + "  ".join(cells))
    say()
    for key in ("up5k", "ecp5-85f"):
        for mk in ("digits-mlp", "fmnist-cnn"):
            m = models[mk]
            try:
                program.check_fits(m, TARGETS[key])
            except UserError as e:
                say(f"  {mk} on {key} does not fit: {e}")

    if not args.no_sim:
        say()
        say("Validation: simulated accelerator (Amaranth, whole top through the host driver,")
        say("scores/class checked against golden) vs predicted cycles")
        cases = tqdm(SIM_CASES, desc="simulations")
        for key, tname, batch in cases:
            model = small_cnn() if key == "cnn-8x8" else models[key]
            target = geometry_target(tname) if tname != "sim" else TARGETS["sim"]
            t0 = time.time()
            res = simulate(model, target, batch)
            pred = perf.predict_network_cycles(model, target, batch=batch)
            err = (pred - res["cycles"]) / res["cycles"]
            say(f"  {key:12s} {target.geometry:8s} batch {batch}  simulated {res['cycles']:7d}  "
                f"predicted {pred:7d}  error {100 * err:+.2f}%  golden match {res['ok']}  "
                f"({time.time() - t0:.0f} s)")
            data["validation"].append({"model": key, "geometry": target.geometry,
                                       "batch": batch, "simulated": res["cycles"],
                                       "predicted": pred, "error": err,
                                       "golden_match": res["ok"]})
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in (("network.txt", "\n".join(lines) + "\n"),
                       ("network.json", json.dumps(data, indent=2) + "\n")):
        files.write_text(OUT / name, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
