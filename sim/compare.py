"""``xnorflow compare``: one compiled model, one input set, several backends, one report.

:func:`compare` runs every backend (:mod:`xnorflow.sim.backends`) on the same images and
checks each against a reference backend (``golden`` when it is among them, else the first):
every hidden layer's output bits, every accumulator both backends expose, every integer
score and every prediction, sample by sample. :func:`write_report` writes a folder with
``report.md``, ``report.json`` and ``report.png`` (agreement, cycles, images/s) atomically.
The first difference is named by sample, layer and output position.

Performance columns for hardware backends: cycles per image (the accelerator's own count),
utilisation ``= binary MACs / (R * C * W) / cycles`` and, when the accelerator has been
synthesised for the target's board and geometry (``bitstreams/<board>/<geometry>/report.json``
under the working folder, of the current ``report_version``), images/s at its Fmax.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xnorflow.sw.boards import bitstream_folder, synthesis_report
from xnorflow.sw.errors import UserError
from xnorflow.sw.ir import json_default

from .backends import (
    HARDWARE,
    ModelFolder,
    Outputs,
    check_backend,
    check_board_link,
    load_model,
)
from .backends import run as run_backend
from .tb.scoreboard import Mismatch, first_difference


@dataclass
class Agreement:
    """How one backend agrees with the reference, over all samples."""

    backend: str
    reference: str
    samples: int
    samples_agree: int
    bits_compared: int
    bits_differ: int
    scores_compared: int
    scores_differ: int
    accumulators_compared: int
    accumulators_differ: int
    predictions_differ: int
    first: Mismatch | None = None

    @property
    def exact(self) -> bool:
        return self.first is None

    def to_json(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "first"}
        d["exact"] = self.exact
        d["first_mismatch"] = None if self.first is None else {
            "sample": self.first.sample, "layer": self.first.layer,
            "position": list(self.first.position), "expected": self.first.expected,
            "got": self.first.got, "text": str(self.first)}
        return d


def agreement(model, ref: Outputs, out: Outputs) -> Agreement:
    """Compare ``out`` with ``ref`` element by element; find the first differing element."""
    n = len(ref.predictions)
    names = [layer.name for layer in model.layers]
    bits_cmp = bits_diff = acc_cmp = acc_diff = 0
    per_sample_bad = np.zeros(n, dtype=bool)
    for i, (a, b) in enumerate(zip(ref.activations, out.activations, strict=False)):
        if a is None or b is None:
            continue
        if a.shape != b.shape:
            raise UserError(f"backend {out.backend}: layer {names[i]!r} output shape {b.shape} "
                            f"!= {ref.backend}'s {a.shape}")
        d = a != b
        bits_cmp += d.size
        bits_diff += int(d.sum())
        per_sample_bad |= d.reshape(n, -1).any(axis=1)
    for a, b in zip(ref.accumulators, out.accumulators, strict=False):
        if a is None or b is None:
            continue
        d = np.asarray(a) != np.asarray(b)
        acc_cmp += d.size
        acc_diff += int(d.sum())
        per_sample_bad |= d.reshape(n, -1).any(axis=1)
    sd = np.asarray(ref.scores) != np.asarray(out.scores)
    per_sample_bad |= sd.reshape(n, -1).any(axis=1)
    pd = np.asarray(ref.predictions) != np.asarray(out.predictions)
    per_sample_bad |= pd
    first = None
    bad = np.flatnonzero(per_sample_bad)
    if len(bad):
        first = first_mismatch(model, ref, out, int(bad[0]))
    return Agreement(
        backend=out.backend, reference=ref.backend, samples=n,
        samples_agree=int(n - per_sample_bad.sum()), bits_compared=bits_cmp,
        bits_differ=bits_diff, scores_compared=int(sd.size), scores_differ=int(sd.sum()),
        accumulators_compared=acc_cmp, accumulators_differ=acc_diff,
        predictions_differ=int(pd.sum()), first=first,
    )


def first_mismatch(model, ref: Outputs, out: Outputs, s: int) -> Mismatch:
    """The first differing element of sample ``s``, in layer order (outputs, then scores)."""
    names = [layer.name for layer in model.layers]
    for i, name in enumerate(names):
        if i < len(ref.accumulators) and i < len(out.accumulators):
            a, b = ref.accumulators[i], out.accumulators[i]
            if a is not None and b is not None:
                d = first_difference(a[s], b[s])
                if d:
                    return Mismatch(s, f"{name} (accumulator)", *d)
        if i < len(ref.activations) and i < len(out.activations):
            a, b = ref.activations[i], out.activations[i]
            if a is not None and b is not None:
                d = first_difference(a[s], b[s])
                if d:
                    return Mismatch(s, name, *d)
    d = first_difference(ref.scores[s], out.scores[s])
    if d:
        return Mismatch(s, f"{names[-1]} (score)", *d)
    return Mismatch(s, "prediction", (), int(ref.predictions[s]), int(out.predictions[s]))


def find_synthesis_report(target, root: Path | None = None) -> dict | None:
    """Fmax of the whole accelerator built for ``target``'s board at its geometry.

    Reads ``bitstreams/<board>/<geometry>/report.json`` under the working folder (or
    ``root``), the default output of ``xnorflow synth``
    (:func:`xnorflow.sw.boards.synthesis_report`: a report of the current version, of the
    accelerator itself, with an Fmax). Returns ``{"path", "board", "fmax_mhz"}`` or
    ``None`` (a ``sim`` target, no such build).
    """
    report = synthesis_report(target.board, target.geometry, root)
    if report is None:
        return None
    path = bitstream_folder(target.board, target.geometry, root) / "report.json"
    out = {"path": str(path), "board": report["board"], "fmax_mhz": float(report["fmax_mhz"])}
    # the clock and baud rate the bitstream runs at (the host link's figures)
    system = (report.get("clock") or {}).get("system_mhz")
    baud = (report.get("uart") or {}).get("baud")
    if isinstance(system, (int, float)) and isinstance(baud, int):
        out.update(system_mhz=float(system), baud=baud)
    return out


def link_throughput(mf: ModelFolder, run_cycles: int, synthesis: dict | None = None) -> dict | None:
    """Images/s over the host link of the board ``mf``'s target is built for (None for a
    ``sim`` target), from the link model (:func:`xnorflow.hw.link.throughput.link_rate`):
    at the baud rate and system clock of its synthesis report, or else the board's defaults;
    one image per run taking ``run_cycles`` (simulated), and ``max_batch`` images per run
    taking the performance model's cycles (:func:`xnorflow.sw.perf.program_cycles`)."""
    from xnorflow.hw.link.throughput import board_clock, image_bytes, link_rate
    from xnorflow.sw.boards import get_board
    from xnorflow.sw.perf import program_cycles
    from xnorflow.sw.program import decode_memories

    t = mf.target
    if t.board is None:
        return None
    board = get_board(t.board)
    if synthesis and "baud" in synthesis:
        baud, clock, source = synthesis["baud"], synthesis["system_mhz"] * 1e6, "synthesis report"
    else:
        baud, clock, source = board.default_baud, board_clock(board), "board defaults"
    header, _ = decode_memories(mf.memories)
    sizes = image_bytes(header, t)
    one = link_rate(baud, clock, 1, *sizes, int(run_cycles))
    n = int(header["max_batch"])
    many = link_rate(baud, clock, n, *sizes, int(program_cycles(mf.memories, t, batch=n)))
    return {"board": board.name, "bridge": board.bridge, "baud": baud, "clock_mhz": clock / 1e6,
            "source": source, "images_per_s": one.images_per_s,
            "bytes_per_image": one.bytes_per_image, "max_batch": n,
            "images_per_s_max_batch": many.images_per_s,
            "bytes_per_image_max_batch": many.bytes_per_image}


@dataclass
class CompareResult:
    model_dir: str
    target: dict
    samples: int
    backends: list[str]
    reference: str
    outputs: dict[str, Outputs]
    agreements: dict[str, Agreement]
    accuracy: dict[str, float | None]
    perf: dict[str, dict]
    synthesis: dict | None
    waves: dict[str, str] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def exact(self) -> bool:
        return all(a.exact for a in self.agreements.values())

    @property
    def first(self) -> tuple[str, Mismatch] | None:
        for name, a in self.agreements.items():
            if a.first is not None:
                return name, a.first
        return None

    def to_json(self) -> dict:
        return {
            "model": self.model_dir, "target": self.target, "samples": self.samples,
            "backends": self.backends, "reference": self.reference, "exact": self.exact,
            "accuracy": self.accuracy, "agreement": {k: a.to_json()
                                                     for k, a in self.agreements.items()},
            "performance": self.perf, "synthesis": self.synthesis, "waves": self.waves,
            "unavailable": self.unavailable,
        }


def throughput(mf: ModelFolder, cycles_per_image: float, synthesis: dict | None) -> dict:
    """Images/s a user sees at ``cycles_per_image`` (one image per run): computed at the
    Fmax of ``synthesis`` (``images_per_s_at_fmax``, ``fmax_mhz``), else at the board's
    default clock (``images_per_s_at_clock``, ``clock_mhz``; nothing for a ``sim`` target),
    and over the host link (``link``: :func:`link_throughput`)."""
    t = mf.target
    d: dict[str, Any] = {}
    if synthesis:
        d["images_per_s_at_fmax"] = synthesis["fmax_mhz"] * 1e6 / cycles_per_image
        d["fmax_mhz"] = synthesis["fmax_mhz"]
    elif t.board is not None:  # no build: at the clock the board top asks for by default
        from xnorflow.sw.boards import get_board

        d["clock_mhz"] = get_board(t.board).default_freq / 1e6
        d["images_per_s_at_clock"] = d["clock_mhz"] * 1e6 / cycles_per_image
    link = link_throughput(mf, round(cycles_per_image), synthesis)
    if link:
        d["link"] = link
    return d


def perf_stats(mf: ModelFolder, out: Outputs, synthesis: dict | None) -> dict:
    d: dict[str, Any] = {"wall_s": round(out.wall_s, 3),
                         "images_per_s_wall": round(len(out.predictions) / out.wall_s, 2)
                         if out.wall_s > 0 else None}
    if out.cycles is not None and len(out.cycles):
        t = mf.target
        cyc = float(np.mean(out.cycles))
        ideal = mf.model.binary_macs / (t.rows * t.cols * t.width)
        d.update({"cycles_per_image": cyc, "cycles_min": int(np.min(out.cycles)),
                  "cycles_max": int(np.max(out.cycles)),
                  "binary_macs_per_image": int(mf.model.binary_macs),
                  "ideal_cycles": ideal, "utilisation": ideal / cyc})
        d.update(throughput(mf, cyc, synthesis))
        if "link" in d:
            d["images_per_s_link"] = d["link"]["images_per_s"]
        if out.sim_cycles:
            d["sim_cycles"] = int(out.sim_cycles)
            d["sim_cycles_per_s"] = out.sim_cycles / out.wall_s if out.wall_s else None
    return d


def compare(model_dir: str | Path, inputs, backends: list[str], labels=None, *,
            waves_dir: Path | None = None, seed: int = 0, progress: bool = True,
            skip_unavailable: bool = False, port: str | None = None,
            baud: int | None = None) -> CompareResult:
    """Run ``inputs`` through every backend and compare each with the reference
    (``port``, ``baud``: the serial port of backend ``board``)."""
    from .backends import BackendUnavailable

    if not backends:
        raise UserError("compare needs at least one backend")
    for b in backends:
        check_backend(b)
    if len(set(backends)) != len(backends):
        raise UserError(f"backend list {','.join(backends)} names a backend twice")
    if "board" in backends:
        check_board_link(port, baud)
    mf = load_model(model_dir)
    synthesis = find_synthesis_report(mf.target)
    outputs: dict[str, Outputs] = {}
    unavailable: dict[str, str] = {}
    waves: dict[str, str] = {}
    for b in backends:
        wpath = None
        if waves_dir is not None and b in HARDWARE:
            wpath = waves_dir / f"{b}.{'fst' if b == 'icarus' else 'vcd'}"
        if progress:
            print(f"compare: running {b} on {len(inputs)} images", flush=True)
        try:
            outputs[b] = run_backend(mf, inputs, b, waves=wpath, seed=seed, progress=progress,
                                     port=port, baud=baud)
        except BackendUnavailable as e:
            if not skip_unavailable:
                raise
            unavailable[b] = str(e)
            continue
        if outputs[b].waves is not None:
            waves[b] = str(outputs[b].waves)
    ran = list(outputs)
    if not ran:
        raise UserError("no backend could run: " + "; ".join(unavailable.values()))
    reference = "golden" if "golden" in outputs else ran[0]
    ref = outputs[reference]
    agreements = {b: agreement(mf.model, ref, o) for b, o in outputs.items() if b != reference}
    acc = {b: (o.accuracy(labels) if labels is not None else None) for b, o in outputs.items()}
    perf = {b: perf_stats(mf, o, synthesis) for b, o in outputs.items()}
    from xnorflow.sw.images import target_record

    return CompareResult(str(mf.path), target_record(mf.target), len(ref.predictions),
                         ran, reference, outputs, agreements, acc, perf, synthesis, waves,
                         unavailable)


def _fmt(v, spec: str = ".4g") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def format_markdown(r: CompareResult) -> str:
    t = r.target
    lines = [
        "# xnorflow compare",
        "",
        f"- model: `{r.model_dir}`",
        f"- target: `{t['name']}` ({t['geometry']}: R x C x W)",
        f"- samples: {r.samples}",
        f"- reference: `{r.reference}`",
        f"- verdict: **{'all backends bit-exact' if r.exact else 'MISMATCH'}**",
    ]
    if r.first:
        name, m = r.first
        lines.append(f"- first difference: backend `{name}`: {m}")
    if r.synthesis:
        s = r.synthesis
        lines.append(f"- synthesis: {s['board']} Fmax {s['fmax_mhz']:.2f} MHz (`{s['path']}`)")
    else:
        where = f"bitstreams/{t['board']}/{t['geometry']}/" if t.get("board") else "(no board)"
        lines.append(f"- synthesis: no report of the accelerator in {where}")
    lines += ["", "## Accuracy and performance", "",
              "| backend | accuracy | wall s | cycles/image | utilisation | images/s computed "
              "| images/s over the link |",
              "|---|---|---|---|---|---|---|"]
    links = []
    for b in r.backends:
        p = r.perf[b]
        acc = r.accuracy.get(b)
        computed = _fmt(p.get("images_per_s_at_fmax"), ".1f")
        if p.get("images_per_s_at_fmax"):
            computed += f" (Fmax {p['fmax_mhz']:.2f} MHz)"
        elif p.get("images_per_s_at_clock"):
            computed = (f"{p['images_per_s_at_clock']:.1f} (at {p['clock_mhz']:g} MHz, the "
                        "board's clock: no synthesis report)")
        lines.append(
            f"| {b} | {_fmt(acc * 100, '.2f') + ' %' if acc is not None else '-'} | "
            f"{_fmt(p.get('wall_s'))} | {_fmt(p.get('cycles_per_image'), '.1f')} | "
            f"{_fmt(p.get('utilisation'), '.3f')} | {computed} | "
            f"{_fmt(p.get('images_per_s_link'), '.1f')} |"
        )
        if p.get("link"):
            links.append((b, p["link"]))
    lines += ["", "Cycles are the accelerator's own count of a run (from the status); images/s "
              "computed = clock / cycles per image, i.e. compute only, at the Fmax of the "
              "accelerator's synthesis report (else at the clock named).", ""]
    for b, ln in links[:1]:
        lines.append(
            f"Images/s over the link: the link model (`hw/link/throughput.py`, "
            f"docs/host-protocol.md) of the {ln['board']}'s {ln['bridge']} UART at "
            f"{ln['baud']:,} baud with the accelerator at {ln['clock_mhz']:.2f} MHz "
            f"({ln['source']}): one image per run of the simulated cycles ({b}), "
            f"{ln['bytes_per_image']:.0f} bytes/image. With {ln['max_batch']} images per run "
            f"(the program's max_batch; performance-model cycles): "
            f"{ln['images_per_s_max_batch']:,.1f} images/s, "
            f"{ln['bytes_per_image_max_batch']:.1f} bytes/image.")
    lines += [
              "", f"## Agreement with `{r.reference}`", "",
              "| backend | samples agree | hidden bits differ | accumulators differ | "
              "scores differ | predictions differ | first difference |",
              "|---|---|---|---|---|---|---|"]
    for b, a in r.agreements.items():
        lines.append(
            f"| {b} | {a.samples_agree}/{a.samples} | {a.bits_differ}/{a.bits_compared} | "
            f"{a.accumulators_differ}/{a.accumulators_compared} | "
            f"{a.scores_differ}/{a.scores_compared} | {a.predictions_differ} | "
            f"{a.first if a.first else '-'} |"
        )
    if r.unavailable:
        lines += ["", "## Unavailable backends", ""]
        lines += [f"- `{b}`: {msg}" for b, msg in r.unavailable.items()]
    if r.waves:
        lines += ["", "## Waveforms", ""]
        lines += [f"- `{b}`: `{p}`" for b, p in r.waves.items()]
    lines += ["", "![agreement and performance](report.png)", ""]
    return "\n".join(lines)


def plot(r: CompareResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    names = r.backends
    agree = [100.0 if b == r.reference else
             100.0 * r.agreements[b].samples_agree / max(1, r.agreements[b].samples)
             for b in names]
    colors = ["tab:green" if a == 100.0 else "tab:red" for a in agree]
    axes[0].bar(names, agree, color=colors)
    axes[0].set_ylim(0, 105)
    axes[0].set_ylabel(f"% samples bit-exact vs {r.reference}")
    axes[0].set_title("agreement")
    hw = [b for b in names if r.perf[b].get("cycles_per_image")]
    if hw:
        axes[1].bar(hw, [r.perf[b]["cycles_per_image"] for b in hw], color="tab:blue")
        axes[1].set_ylabel("accelerator cycles / image")
        ideal = r.perf[hw[0]].get("ideal_cycles")
        if ideal:
            axes[1].axhline(ideal, color="k", ls="--", lw=1, label="ideal (MACs / RCW)")
            axes[1].legend(loc="lower right")
        axes[1].set_title("cycles per image")
    else:
        axes[1].bar(names, [r.perf[b]["wall_s"] for b in names], color="tab:gray")
        axes[1].set_ylabel("wall time, s")
        axes[1].set_title("wall time")
    fig.suptitle(f"xnorflow compare: {Path(r.model_dir).name}, {r.samples} samples, "
                 f"{r.target['geometry']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(r: CompareResult, out_dir: str | Path) -> Path:
    """Write ``report.md``, ``report.json`` and ``report.png`` into ``out_dir`` atomically."""
    from xnorflow.sw.files import atomic_folder

    out = Path(out_dir)
    with atomic_folder(out) as tmp:
        for b, p in r.waves.items():
            src = Path(p)
            if src.is_file() and src.parent != out:
                shutil.copy2(src, tmp / src.name)
                r.waves[b] = str(out / src.name)
        doc = json.dumps(r.to_json(), indent=2, default=json_default)
        (tmp / "report.json").write_text(doc + "\n")
        (tmp / "report.md").write_text(format_markdown(r))
        plot(r, tmp / "report.png")
    return out
