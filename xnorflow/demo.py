"""The main job in one command: train -> compile -> run every backend -> compare -> synthesise
-> one report folder.

Each stage is the same code the individual subcommands run (``xnorflow train``, ``compile``,
``compare``, ``synth``); this module only chains them, times them and writes the report.
"""

from __future__ import annotations

import html
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from xnorflow.sw.errors import UserError
from xnorflow.sw.files import atomic_folder

#: Per data set: model, widths, epochs, learning rate and the board
#: (:mod:`xnorflow.sw.boards`) whose target the model is compiled for and whose bitstream is
#: built, at the board's default clock (one the whole accelerator meets there).
PRESETS = {
    # the hyper-parameters of benchmarks/accuracy.py's goal row (98.06% mean over 3 seeds)
    ("digits", "mlp"): dict(widths=None, epochs=60, lr=1e-2, batch=32, ste="approxsign",
                            board="icebreaker"),
    # the CNN's activation maps do not fit the UP5K's block RAM: the ULX3S (ECP5-85F) instead
    ("fashion-mnist", "cnn"): dict(widths=None, epochs=4, lr=2e-3, batch=128,
                                   board="ulx3s-85f"),
    # the best Fashion-MNIST MLP actually trained (benchmarks/results/
    # accuracy.headline.fashion-mlp512-kd.md: 89.64 % deploy, 40 epochs, distilled from a float
    # teacher; the 256,256 preset it replaces reached at most 88.43 %), used as committed;
    # --epochs N retrains 512,512 with these hyper-parameters but without the teacher. Its 517
    # threshold words do not fit the UP5K's 512: the ULX3S (ECP5-85F) instead
    ("fashion-mnist", "mlp"): dict(widths=[512, 512], epochs=40, lr=5e-3, batch=64,
                                   ste="approxsign",
                                   checkpoint="benchmarks/results/models/fashion-mlp512-kd-s0",
                                   board="ulx3s-85f"),
}
DEFAULT_BACKENDS = ("torch", "golden", "cpu", "amaranth", "icarus")
#: the repository root (committed trained models live in benchmarks/results/models/)
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Stage:
    name: str
    seconds: float
    detail: str = ""


@dataclass
class DemoResult:
    out: Path
    out_work: Path = Path(".")
    stages: list[Stage] = field(default_factory=list)
    train: dict = field(default_factory=dict)
    size: dict = field(default_factory=dict)
    compare: dict = field(default_factory=dict)
    synth: dict | None = None
    synth_error: str | None = None
    throughput: dict = field(default_factory=dict)
    exact: bool = False

    @property
    def ok(self) -> bool:
        """Every backend agreed bit for bit and (when asked for) the bitstream was built."""
        return self.exact and self.synth_error is None


def _preset(dataset: str, model: str) -> dict:
    """The preset with its board's ``target`` filled in."""
    from xnorflow.sw.boards import get_board

    try:
        p = dict(PRESETS[(dataset, model)])
        return {**p, "target": get_board(p["board"]).target}
    except KeyError:
        known = ", ".join(f"--dataset {d} --model {m}" for d, m in PRESETS)
        raise UserError(f"no demo preset for --dataset {dataset} --model {model}; "
                        f"known: {known}") from None


def use_trained(src: Path, dest: Path, data) -> dict:
    """Copy a committed trained model (``checkpoint.pt`` + ``config.json``) into ``dest`` and
    evaluate it as ``xnorflow train`` would (float-sim, deploy, agreement) on ``data``."""
    from xnorflow.sw.lower import CHECKPOINT, CONFIG, load_checkpoint
    from xnorflow.sw.train import METRICS, _plot_curve, _write_json, evaluate

    dest.mkdir(parents=True, exist_ok=True)
    for name in (CHECKPOINT, CONFIG):
        shutil.copy2(src / name, dest / name)
    model, state = load_checkpoint(dest)
    final = evaluate(model, data)
    hist = state.get("history", [])
    metrics = {"config": state.get("config", model.config), "history": hist, "final": final,
               "float_acc": final["float_acc"], "deploy_acc": final.get("deploy_acc"),
               "source": str(src), "epochs": int(state.get("epoch", len(hist)))}
    _write_json(dest / METRICS, metrics)
    try:
        _plot_curve(dest, hist)
    except Exception:  # noqa: BLE001 - a plot must never fail the demo
        pass
    return metrics


def _trained_preset(p: dict, dataset: str, model: str, epochs: int | None, log) -> dict:
    """A preset naming a committed trained model: use it, unless ``--epochs`` asks to retrain
    (with the preset's hyper-parameters) or it is not there (an installed copy without the
    repository's benchmarks/)."""
    name = p.get("checkpoint")
    if name is None:
        return p
    path = ROOT / name
    if epochs is not None or not (path / "checkpoint.pt").is_file():
        if epochs is None:
            log(f"demo: {path} not found (installed without the repository?): training "
                f"{p['epochs']} epochs with the preset's hyper-parameters instead")
        return {**p, "retrain": True}
    return {**p, "checkpoint": str(path)}


def is_demo_folder(folder: Path) -> bool:
    """Whether ``folder`` is empty or an earlier demo's (its ``report.json`` has the demo's
    stages): the only folders a demo replaces."""
    from xnorflow.sw import files

    return files.is_report_folder(folder, ("stages", "exact"))


def check_out(out: Path) -> None:
    """Refuse, before the demo's minutes of work, an output folder it may not replace: a
    file, a mount point, a folder other than an earlier demo's, an unwritable place."""
    from xnorflow.sw.files import check_can_create, existing_folder_only

    existing_folder_only(out)
    if out.is_dir() and not is_demo_folder(out):
        raise UserError(f"{out}: exists and is not a demo report folder (no report.json from "
                        "xnorflow demo); refusing to replace it: choose another -o")
    check_can_create(out)


def run_demo(out: str | Path, dataset: str = "digits", model: str = "mlp", *,
             epochs: int | None = None, limit: int | None = None, hw_limit: int | None = 64,
             backends: tuple[str, ...] = DEFAULT_BACKENDS, synth: bool = True, seed: int = 0,
             data_path: str | None = None, log=print) -> DemoResult:
    """Run the whole flow into ``out`` (created; an earlier demo's folder is replaced at the
    end, any other existing folder refused before any work: :func:`check_out`).

    ``limit`` caps the test images for the software backends, ``hw_limit`` for the simulated
    hardware backends (Amaranth's simulator and Icarus run a few hundred images per minute);
    every backend is compared on the images they all ran.
    """
    from xnorflow.sw.data import load_dataset
    from xnorflow.sw.train import train

    p = _trained_preset(_preset(dataset, model), dataset, model, epochs, log)
    if epochs is not None:
        p["epochs"] = epochs
    out = Path(out)
    check_out(out)
    data = load_dataset(dataset, data_path)  # fails early, naming the files, if data is missing
    res = DemoResult(out)
    with atomic_folder(out, check_out) as work:
        res.out_work = work
        _run(work, res, data, dataset, model, p, limit, hw_limit, backends, synth, seed, log,
             train)
        _write_report(work, res)
    res.out_work = out
    return res


def _timed(res: DemoResult, name: str, log):
    class _T:
        def __enter__(self):
            log(f"\n== demo: {name} ==", flush=True)
            self.t0 = time.monotonic()
            self.stage = Stage(name, 0.0)
            return self.stage

        def __exit__(self, *exc):
            self.stage.seconds = time.monotonic() - self.t0
            res.stages.append(self.stage)
            return False

    return _T()


def _run(work: Path, res: DemoResult, data, dataset: str, model: str, p: dict, limit, hw_limit,
         backends, synth: bool, seed: int, log, train) -> None:
    from xnorflow.sim.compare import compare, write_report
    from xnorflow.sw.compiler import compile_checkpoint

    ckpt, compiled = work / "checkpoint", work / "model"
    trained = p.get("checkpoint")
    if trained is not None and not p.get("retrain"):
        with _timed(res, "trained model", log) as st:
            res.train = use_trained(Path(trained), ckpt, data)
            st.detail = (f"{res.train['source']}: deploy accuracy "
                         f"{res.train.get('deploy_acc', float('nan')):.2%}")
    else:
        with _timed(res, "train", log) as st:
            cfg = {"model": model, "dataset": dataset, "mode": "xnor"}
            if p.get("ste"):
                cfg["ste"] = p["ste"]
            if p["widths"]:
                cfg["widths"] = p["widths"]
            res.train = train(cfg, ckpt, epochs=p["epochs"], batch=p["batch"], lr=p["lr"],
                              seed=seed, data=data)
            st.detail = (f"{p['epochs']} epochs, deploy accuracy "
                         f"{res.train.get('deploy_acc', float('nan')):.2%}")
    with _timed(res, f"compile ({p['target']})", log) as st:
        _, res.size, _ = compile_checkpoint(ckpt, p["target"], compiled)
        st.detail = (f"{res.size['image_bits']['total']:,} bits of images, "
                     f"{res.size['image_ratio']:.1f}x smaller than fp32")
    x, y = data.x_test, data.y_test
    if limit:
        x, y = x[:limit], y[:limit]
    sw = [b for b in backends if b not in ("amaranth", "icarus", "verilator")]
    hw = [b for b in backends if b in ("amaranth", "icarus", "verilator")]
    if synth:
        from xnorflow.sw.targets import get_target
        from xnorflow.synth import SynthConfig, synthesize

        t = get_target(p["target"])
        with _timed(res, f"synthesise ({p['board']} {t.geometry})", log) as st:
            try:
                res.synth = synthesize(SynthConfig(board=p["board"], geometry=t.geometry,
                                                   model=str(compiled),
                                                   out_dir=str(work / "bitstream"),
                                                   build_dir=str(work / "build")))
                st.detail = _synth_line(res.synth)
            except UserError as e:  # reported, and the demo fails at the end
                kept = work / "bitstream"  # keep the failed build's logs in the report
                kept.mkdir(exist_ok=True)
                msg = str(e)
                for src, dst in (("top.rpt", "yosys.log"), ("top.tim", "nextpnr.log")):
                    if (work / "build" / src).is_file():
                        shutil.copy2(work / "build" / src, kept / dst)
                        msg = msg.replace(str(work / "build" / src), f"bitstream/{dst}")
                res.synth_error = msg
                st.detail = f"FAILED: {msg}"
                log(f"demo: synthesis failed: {msg}")
            finally:
                shutil.rmtree(work / "build", ignore_errors=True)
    with _timed(res, f"compare {','.join(sw)} on {len(x)} images", log) as st:
        r_sw = compare(compiled, x, sw, labels=y, seed=seed)
        write_report(r_sw, work / "compare-software")
        st.detail = "bit-exact" if r_sw.exact else "MISMATCH"
    res.compare["software"] = r_sw.to_json()
    exact = r_sw.exact
    if hw:
        n = min(len(x), hw_limit or len(x))
        with _timed(res, f"compare golden,{','.join(hw)} on {n} images", log) as st:
            r_hw = compare(compiled, x[:n], ["golden", *hw], labels=y[:n], seed=seed)
            write_report(r_hw, work / "compare-hardware")
            st.detail = "bit-exact" if r_hw.exact else "MISMATCH"
        res.compare["hardware"] = r_hw.to_json()
        exact = exact and r_hw.exact
        res.throughput = _throughput(compiled, res.compare["hardware"], res.synth)
    res.exact = exact


def _throughput(compiled: Path, hw: dict, synth: dict | None) -> dict:
    """Images/s a user sees, from the first simulated hardware backend's cycles (one image
    per run): computed at the Fmax of this demo's synthesis (else at the board's default
    clock, said so), and over the host link at the bitstream's baud rate and clock (else the
    board's defaults): :func:`xnorflow.sim.compare.throughput`."""
    from xnorflow.sim.backends import load_model
    from xnorflow.sim.compare import throughput

    b = next((b for b in hw["backends"]
              if hw["performance"].get(b, {}).get("cycles_per_image")), None)
    if b is None:
        return {}
    cyc = float(hw["performance"][b]["cycles_per_image"])
    synthesis = None
    if synth and synth.get("fmax_mhz"):
        synthesis = {"fmax_mhz": float(synth["fmax_mhz"]),
                     "system_mhz": float(synth["clock"]["system_mhz"]),
                     "baud": int(synth["uart"]["baud"])}
    return {"backend": b, "cycles_per_image": cyc,
            **throughput(load_model(compiled), cyc, synthesis)}


def _throughput_lines(t: dict) -> list[str]:
    """The report's lines for :func:`_throughput`'s figures."""
    if not t:
        return ["- no simulated hardware backend ran: no cycle counts"]
    lines = []
    cyc = f"{t['cycles_per_image']:,.0f} simulated cycles/image ({t['backend']}, one per run)"
    if "images_per_s_at_fmax" in t:
        lines.append(f"- computed at the achieved Fmax {t['fmax_mhz']:.2f} MHz (this demo's "
                     f"synthesis), {cyc}: **{t['images_per_s_at_fmax']:,.0f} images/s**")
    elif "images_per_s_at_clock" in t:
        lines.append(f"- computed at {t['clock_mhz']:g} MHz (the board's default clock; no "
                     f"synthesis, so no Fmax), {cyc}: **{t['images_per_s_at_clock']:,.0f} "
                     "images/s**")
    ln = t.get("link")
    if ln:
        lines.append(
            f"- over the host link (link model, docs/host-protocol.md; {ln['board']} "
            f"{ln['bridge']} UART at {ln['baud']:,} baud, accelerator at "
            f"{ln['clock_mhz']:.2f} MHz from the {ln['source']}): "
            f"**{ln['images_per_s']:,.0f} images/s** one image per run "
            f"({ln['bytes_per_image']:.0f} bytes/image), **{ln['images_per_s_max_batch']:,.0f} "
            f"images/s** with {ln['max_batch']} per run "
            f"({ln['bytes_per_image_max_batch']:.1f} bytes/image)")
    return lines


def _synth_line(rep: dict) -> str:
    res = rep.get("resources", {})
    lc = res.get("logic_cells", {})
    return (f"Fmax {rep.get('fmax_mhz')} MHz, {lc.get('used')}/{lc.get('available')} LCs, "
            f"{res.get('bram', {}).get('used', 0)} EBR, {res.get('spram', {}).get('used', 0)} "
            "SPRAM")


def _perf_rows(res: DemoResult) -> list[tuple]:
    """(part, backend, accuracy, agreement, cycles/image, utilisation, images/s) rows."""
    rows = []
    for part, doc in res.compare.items():
        ref = doc["reference"]
        for b in doc["backends"]:
            agr = doc["agreement"].get(b)
            perf = doc["performance"].get(b, {})
            if b == ref:
                agree = "reference"
            else:
                agree = ("bit-exact" if agr["exact"]
                         else f"MISMATCH: {agr['first_mismatch']['text']}")
                agree += f" ({agr['bits_compared']:,} bits, {agr['scores_compared']:,} scores)"
            rows.append((part, b, doc["samples"], doc["accuracy"].get(b), agree,
                         perf.get("cycles_per_image"), perf.get("utilisation"),
                         perf.get("images_per_s_wall")))
    return rows


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f} %"


def _num(v, spec=",.0f") -> str:
    return "-" if v is None else format(v, spec)


def _write_report(work: Path, res: DemoResult) -> None:
    """report.md, report.html, report.json and the plots, from what the stages returned."""
    from xnorflow.sw.train import CURVE

    curve = work / "checkpoint" / CURVE
    if curve.is_file():
        shutil.copy2(curve, work / "training_curve.png")
    _plots(work, res)
    md = _markdown(res)
    (work / "report.md").write_text(md)
    (work / "report.html").write_text(
        "<!doctype html><meta charset=utf-8><title>xnorflow demo</title>"
        "<pre style='font: 14px monospace'>" + html.escape(md) + "</pre>"
        + "".join(f"<p><img src='{p.relative_to(work)}'></p>"
                  for p in sorted(work.rglob("*.png")))
    )
    doc = {"stages": [s.__dict__ for s in res.stages], "train": res.train, "size": res.size,
           "compare": res.compare, "synth": res.synth, "throughput": res.throughput,
           "exact": res.exact}
    (work / "report.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")


def _plots(work: Path, res: DemoResult) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in _perf_rows(res) if r[3] is not None]
    if rows:
        fig, ax = plt.subplots(figsize=(7, 3))
        labels = [f"{b}\n({n} img)" for _, b, n, *_ in rows]
        ax.bar(labels, [100 * r[3] for r in rows], color="tab:blue")
        ax.set(ylabel="test accuracy (%)", ylim=(min(100 * r[3] for r in rows) - 5, 100.5),
               title="accuracy per backend")
        fig.tight_layout()
        fig.savefig(work / "accuracy.png", dpi=80)
        plt.close(fig)
    if res.synth:
        r = res.synth["resources"]
        names, used = [], []
        for key, label in (("logic_cells", "LCs"), ("bram", "EBR"), ("spram", "SPRAM"),
                           ("dsp", "DSP"), ("io", "IO")):
            d = r.get(key) or {}
            if d.get("available"):
                names.append(f"{label}\n{d['used']}/{d['available']}")
                used.append(100 * d["used"] / d["available"])
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.bar(names, used, color="tab:green")
        ax.axhline(100, color="k", lw=0.5)
        ax.set(ylabel="% of the device", title=f"{res.synth['board']} {res.synth['geometry']}"
               f": Fmax {res.synth.get('fmax_mhz')} MHz")
        fig.tight_layout()
        fig.savefig(work / "resources.png", dpi=80)
        plt.close(fig)


def _markdown(res: DemoResult) -> str:
    t = res.train
    lines = ["# xnorflow demo report", ""]
    lines += ["## Stages", "", "| stage | seconds | result |", "|---|---:|---|"]
    lines += [f"| {s.name} | {s.seconds:.1f} | {s.detail} |" for s in res.stages]
    total = sum(s.seconds for s in res.stages)
    lines += [f"| total | {total:.1f} | |", ""]
    lines += ["## Model", ""]
    if t and t.get("source"):
        lines += [f"- the committed trained model `{t['source']}` ({t.get('epochs')} epochs; "
                  "its training is recorded in benchmarks/results/; `--epochs N` retrains "
                  "instead)"]
    if t:
        lines += [f"- trained: float-sim test accuracy {_pct(t.get('float_acc'))}, deploy "
                  f"(integer) accuracy {_pct(t.get('deploy_acc'))}, float/deploy agreement "
                  f"{_pct(t.get('final', {}).get('agreement'))} of test predictions"]
    if res.size:
        s = res.size
        lines += [f"- size: {s.get('binary_weights', 0):,} binary weights; packed weights "
                  f"{_num(s.get('weight_ratio'), '.2f')}x smaller than fp32 "
                  f"({_num(s.get('weight_ratio_padded'), '.2f')}x as stored, padded); whole "
                  f"memory image {_num(s.get('image_bits', {}).get('total'))} bits, "
                  f"{_num(s.get('image_ratio'), '.1f')}x smaller than the fp32 model"]
    lines += ["", "## Backends", "",
              "| run | backend | images | accuracy | agreement with golden | cycles/image "
              "| utilisation | images/s (wall) |", "|---|---|---:|---:|---|---:|---:|---:|"]
    for part, b, n, acc, agree, cyc, util, ips in _perf_rows(res):
        lines.append(f"| {part} | {b} | {n} | {_pct(acc)} | {agree} | {_num(cyc)} | "
                     f"{_pct(util)} | {_num(ips, ',.1f')} |")
    lines += ["", "Wall-clock images/s include each backend's start-up (the CPU kernel's first "
              "call JIT-compiles it; `benchmarks/cpu_kernel.py` measures its speed). Hardware "
              "backends' cycles are the accelerator's clock cycles per image.", "",
              f"All backends bit-exact: **{'yes' if res.exact else 'NO'}**", ""]
    lines += ["## Throughput a user sees", "", *_throughput_lines(res.throughput), ""]
    lines += ["## Synthesis", ""]
    if res.synth:
        r, m = res.synth, res.synth.get("model") or {}
        lc = r["resources"].get("logic_cells", {})
        lines += [f"- {r['board']} ({r['device']}), {r['geometry']}: {r['design']}",
                  f"- {_synth_line(r)}; timing met at {r['clock']['system_mhz']} MHz: "
                  f"{r['timing_met']}; nextpnr seed {r['seed']}",
                  f"- LUT4 {r['resources'].get('lut4')}, FF {r['resources'].get('ff')}, "
                  f"logic cells {lc.get('percent')} %",
                  f"- predicted for this model (performance and link models): "
                  f"{_num(m.get('cycles_per_image'))} cycles/image, "
                  f"{_num(m.get('images_per_s_compute'))} images/s computing at Fmax; "
                  f"{_num(m.get('images_per_s_link'), ',.1f')} images/s over the "
                  f"{r['uart']['baud']:,} baud UART with "
                  f"{(m.get('link') or {}).get('batch', '-')} images per run",
                  "- bitstream and logs: `bitstream/` (report.md there has everything)"]
    elif res.synth_error:
        lines += [f"- FAILED: {res.synth_error}"]
    else:
        lines += ["- skipped (--no-synth)"]
    lines += ["", "## Plots", ""]
    lines += [f"![{n}]({n})" for n in ("training_curve.png", "accuracy.png", "resources.png")
              if (res.out_work / n).is_file()]
    return "\n".join(lines) + "\n"


def print_summary(res: DemoResult) -> None:
    """The table printed at the end of ``xnorflow demo``."""
    print("\n== xnorflow demo summary ==")
    print(f"{'backend':<10} {'images':>6} {'accuracy':>9} {'cycles/img':>10} {'util':>8}  "
          "agreement")
    for _, b, n, acc, agree, cyc, util, _ in _perf_rows(res):
        print(f"{b:<10} {n:>6} {_pct(acc):>9} {_num(cyc):>10} {_pct(util):>8}  {agree}")
    if res.synth:
        print(f"synthesis: {res.synth['board']} {res.synth['geometry']}: {_synth_line(res.synth)}")
    elif res.synth_error:
        print(f"synthesis: FAILED: {res.synth_error}")
    for line in _throughput_lines(res.throughput):
        print("throughput: " + line[2:].replace("**", ""))
    total = sum(s.seconds for s in res.stages)
    verdict = "every backend bit-exact" if res.exact else "BACKENDS DISAGREE"
    print(f"{verdict}; total {total:.0f} s; report: {res.out / 'report.md'}")
