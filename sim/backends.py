"""Every backend behind one interface: ``run(model_dir, inputs, backend) -> Outputs``.

Backends (:data:`BACKENDS`):

* ``torch`` -- PyTorch deploy mode (:mod:`xnorflow.sw.deploy`), when the model folder records the
  checkpoint it was compiled from; otherwise unavailable with a message saying so.
* ``golden`` -- :func:`xnorflow.sw.golden.run`, the definition of correct.
* ``cpu`` -- the fast CPU kernel (:func:`xnorflow.sw.cpu_kernel.run`).
* ``amaranth`` -- Amaranth's simulator running the ``Accelerator`` on the model's target,
  driven by the host link's session (:class:`xnorflow.hw.link.HostSession`) through
  :class:`~xnorflow.hw.link.AmaranthStreamTransport`.
* ``icarus``, ``verilator`` -- the generated Verilog of the same ``Accelerator`` under cocotb
  (:mod:`xnorflow.sim.tb.test_accelerator`), driven by the same session through
  :class:`~xnorflow.hw.link.CocotbStreamTransport`.
* ``board`` -- a real board running the model's bitstream, over a serial port (``port``,
  ``baud``): the same session through :class:`~xnorflow.hw.link.SerialTransport`.

Every backend returns :class:`Outputs`: predictions, integer scores, per-hidden-layer output
maps (bits or levels) where the backend can read them, accumulators where it has them, and
for the hardware backends (and a board) the accelerator's cycles per image. Bad input
(missing folder, unknown backend, a model compiled for another target, a serial port that
cannot be opened) raises :class:`~xnorflow.sw.errors.UserError` with a one-line message.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xnorflow.sw import files
from xnorflow.sw.errors import UserError, require_extra

BACKENDS = ("torch", "golden", "cpu", "amaranth", "icarus", "verilator", "board")
#: Simulated hardware (waveforms, random stream stalls).
HARDWARE = ("amaranth", "icarus", "verilator")
RTL = ("icarus", "verilator")


class BackendUnavailable(UserError):
    """A backend that cannot run here (missing module, checkpoint or simulator)."""


@dataclass
class Outputs:
    """What one backend computed for a batch of ``N`` images.

    ``activations[i]`` is hidden layer ``i``'s output map ``(N, H, W, C)`` or ``None`` when
    the backend cannot observe it; ``accumulators[i]`` likewise (software backends only).
    ``cycles`` holds accelerator clock cycles per image (hardware backends), ``sim_cycles``
    the simulated clock cycles of the whole run including the host link.
    """

    backend: str
    predictions: np.ndarray
    scores: np.ndarray
    activations: list[np.ndarray | None]
    accumulators: list[np.ndarray | None] = field(default_factory=list)
    cycles: np.ndarray | None = None
    wall_s: float = 0.0
    sim_cycles: int | None = None
    waves: Path | None = None
    info: dict = field(default_factory=dict)

    def accuracy(self, labels) -> float:
        labels = np.asarray(labels)
        return float((self.predictions == labels).mean()) if len(labels) else float("nan")

    def save(self, path: Path) -> None:
        """Write the arrays to an ``.npz`` file (used to hand results out of a simulator)."""
        arrays = {"predictions": self.predictions, "scores": self.scores}
        for i, a in enumerate(self.activations):
            if a is not None:
                arrays[f"act{i}"] = a
        if self.cycles is not None:
            arrays["cycles"] = self.cycles
        meta = {"backend": self.backend, "n_act": len(self.activations),
                "sim_cycles": self.sim_cycles, "info": self.info}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        with files.atomic_file(path, suffix=".npz") as tmp:
            np.savez(tmp, **arrays)

    @classmethod
    def load(cls, path: Path) -> Outputs:
        with np.load(path) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            acts = [z[f"act{i}"] if f"act{i}" in z.files else None for i in range(meta["n_act"])]
            return cls(
                backend=meta["backend"],
                predictions=z["predictions"],
                scores=z["scores"],
                activations=acts,
                cycles=z["cycles"] if "cycles" in z.files else None,
                sim_cycles=meta.get("sim_cycles"),
                info=meta.get("info", {}),
            )


# ----- model folders -------------------------------------------------------------------
@dataclass
class ModelFolder:
    """A loaded, checked model folder: manifest, compiled model, memory images, target."""

    path: Path
    manifest: dict
    model: Any
    memories: list
    target: Any


def load_model(model_dir: str | Path, target: Any = None) -> ModelFolder:
    """Load ``model_dir`` (a model folder, :mod:`xnorflow.sw.images`) and resolve its target.

    The target is the one named in the manifest (looked up with
    :func:`xnorflow.sw.targets.get_target`, which also refuses a folder compiled for an older
    definition of it); ``target`` (a name or ``Target``) demands a specific one and refuses a
    folder compiled for another.
    """
    from xnorflow.sw.images import load_model_folder, read_manifest, target_from_record
    from xnorflow.sw.targets import get_target

    path = Path(model_dir)
    if not path.exists():
        raise UserError(f"{path}: no such model folder (make one with: xnorflow compile ...)")
    manifest = read_manifest(path)
    rec = manifest["target"]
    if target is None:
        try:
            target = get_target(rec.get("name"))
        except UserError:
            target = target_from_record(rec)  # e.g. a sim_target's folder
    elif isinstance(target, str):
        target = get_target(target)
    manifest, model, memories = load_model_folder(path, target)
    return ModelFolder(path, manifest, model, memories, target)


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise UserError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    return name


def _check_inputs(model, inputs) -> np.ndarray:
    px = np.asarray(inputs)
    if px.ndim == 3:
        px = px[None]
    if px.dtype != np.uint8:
        raise UserError(f"input images must be uint8 pixels (0..255), not {px.dtype}")
    if px.ndim != 4 or px.shape[1:] != (model.in_h, model.in_w, model.in_c):
        raise UserError(
            f"input images have shape {px.shape[1:]}, the model expects "
            f"{(model.in_h, model.in_w, model.in_c)} (H, W, C)"
        )
    return px


# ----- software backends ---------------------------------------------------------------
def _from_golden_result(name: str, r, wall: float, info: dict | None = None) -> Outputs:
    return Outputs(
        backend=name,
        predictions=np.asarray(r.predictions),
        scores=np.asarray(r.scores),
        activations=list(r.activations),
        accumulators=list(getattr(r, "accumulators", []) or []),
        wall_s=wall,
        info=info or {},
    )


def _golden(mf: ModelFolder, px: np.ndarray, **_) -> Outputs:
    from xnorflow.sw import golden

    t = time.perf_counter()
    r = golden.run(mf.model, px, width=mf.target.width)
    return _from_golden_result("golden", r, time.perf_counter() - t)


def _cpu(mf: ModelFolder, px: np.ndarray, **_) -> Outputs:
    from xnorflow.sw import cpu_kernel

    t = time.perf_counter()
    r = cpu_kernel.run(mf.model, px)
    return _from_golden_result("cpu", r, time.perf_counter() - t, {"kernel": "cpu_kernel"})


def _torch(mf: ModelFolder, px: np.ndarray, **_) -> Outputs:
    """PyTorch deploy mode (:func:`xnorflow.sw.deploy.run`, PyTorch convolutions)."""
    ckpt = (mf.model.meta or {}).get("checkpoint")
    if not ckpt:
        raise BackendUnavailable(
            f"{mf.path}: backend torch runs the PyTorch model the folder was compiled from, "
            "but this folder records no checkpoint (compile it from `xnorflow train` output)"
        )
    from xnorflow.sw import deploy

    t = time.perf_counter()
    r = deploy.run(mf.model, px, hidden=True)
    out = Outputs("torch", np.asarray(r.predictions), np.asarray(r.scores),
                  list(r.activations or []), wall_s=time.perf_counter() - t,
                  info={"checkpoint": str(ckpt)})
    return out


# ----- hardware backends ---------------------------------------------------------------
def open_session(transport, mf: ModelFolder, **kw):
    """:meth:`xnorflow.hw.link.HostSession.open` for a model folder (``kw``: ``read_hidden``,
    ``load``)."""
    from xnorflow.hw.link import HostSession

    return HostSession.open(transport, mf.model, mf.memories, mf.target, name=str(mf.path),
                            **kw)


def collect(model, results: list, backend: str) -> Outputs:
    """Stack per-image :class:`~xnorflow.hw.link.ImageResult` s into :class:`Outputs`."""
    n_hidden = sum(1 for layer in model.layers if layer.output == "threshold")
    acts: list[np.ndarray | None] = []
    for i in range(n_hidden):
        maps = [r.hidden[i] if i < len(r.hidden) else None for r in results]
        acts.append(None if not maps or any(m is None for m in maps)
                    else np.stack(maps).astype(np.uint8))
    n_cls = model.layers[-1].out_c
    scores = np.array([r.scores for r in results], dtype=np.int64).reshape(len(results), n_cls)
    return Outputs(
        backend=backend,
        predictions=np.array([r.prediction for r in results], dtype=np.int64),
        scores=scores,
        activations=acts,
        cycles=np.array([r.cycles for r in results], dtype=np.int64),
    )


def _amaranth(mf: ModelFolder, px: np.ndarray, *, waves: Path | None = None, seed: int = 0,
              idle: float = 0.0, backpressure: float = 0.0, progress: bool = True,
              batch: int = 1, **_) -> Outputs:
    from .amaranth_sim import run_amaranth

    return run_amaranth(mf, px, waves=waves, seed=seed, idle=idle,
                        backpressure=backpressure, progress=progress, batch=batch)


def _rtl(sim: str):
    def run(mf: ModelFolder, px: np.ndarray, *, waves: Path | None = None, seed: int = 0,
            idle: float = 0.0, backpressure: float = 0.0, progress: bool = True,
            batch: int = 1, **_) -> Outputs:
        return run_rtl(sim, mf, px, waves=waves, seed=seed, idle=idle,
                       backpressure=backpressure, progress=progress, batch=batch)

    return run


def run_rtl(sim: str, mf: ModelFolder, px: np.ndarray, *, waves: Path | None = None,
            seed: int = 0, idle: float = 0.0, backpressure: float = 0.0,
            progress: bool = True, batch: int = 1) -> Outputs:
    """Run ``px`` through the accelerator's Verilog on ``sim`` under cocotb."""
    return run_rtl_batch(sim, [(mf, px)], waves=waves, seed=seed, idle=idle,
                         backpressure=backpressure, progress=progress, batch=batch)[0]


def run_rtl_batch(sim: str, items: list[tuple[ModelFolder, np.ndarray]], *,
                  waves: Path | None = None, seed: int = 0, idle: float = 0.0,
                  backpressure: float = 0.0, progress: bool = True,
                  deadline: float | None = None,
                  batch: int | list[int] = 1) -> list[Outputs]:
    """Run several (model folder, images) pairs of one target in one simulator launch.

    The Verilog is sized for all of them (:func:`xnorflow.sim.rtl.accelerator_verilog`);
    the host driver loads each model before its images, and sends ``batch`` images per
    START (at most the model's ``max_batch``; see :func:`run`), or ``batch[k]`` for item
    ``k``. ``Outputs.wall_s`` of each item is the launch's wall time shared out by
    simulated cycles. With ``deadline`` (UNIX time) the simulation stops after the START in
    progress at that time: items then hold fewer outputs than inputs (or none), which
    callers must check.
    """
    from .rtl import accelerator_verilog, cache_dir
    from .runner import run_cocotb

    require_extra("cocotb_tools.runner", "sim")  # before minutes of Verilog and builds
    if not items:
        return []
    target = items[0][0].target
    for mf, _ in items:
        if mf.target.geometry != target.geometry or mf.target.name != target.name:
            raise UserError(f"{mf.path}: target {mf.target.name} differs from "
                            f"{target.name}; one launch runs one target")
    t0 = time.perf_counter()
    rtl = accelerator_verilog(target, [mf.memories for mf, _ in items])
    gen_s = time.perf_counter() - t0
    job = Path(tempfile.mkdtemp(prefix="job-", dir=cache_dir()))
    per_item = [batch] * len(items) if isinstance(batch, int) else list(batch)
    spec_items = []
    for k, ((mf, px), b) in enumerate(zip(items, per_item, strict=True)):
        np.save(job / f"inputs{k}.npy", px)
        spec_items.append({"model_dir": str(mf.path.resolve()),
                           "inputs": str(job / f"inputs{k}.npy"),
                           "outputs": str(job / f"outputs{k}.npz"), "batch": int(b)})
    spec = {"items": spec_items, "seed": seed, "idle": idle, "backpressure": backpressure,
            "backend": sim, "progress": bool(progress), "deadline": deadline}
    (job / "job.json").write_text(json.dumps(spec))
    try:
        run = run_cocotb(sim, rtl, "xnorflow.sim.tb.test_accelerator", test_filter="run_job",
                         extra_env={"XNORFLOW_JOB": str(job / "job.json")},
                         waves=waves is not None, waves_path=waves, seed=seed,
                         test_dir=job, quiet=True)
    except SystemExit as e:
        raise UserError(f"{sim} simulation failed (exit {e.code}); log in {job}") from None
    missing = [it["outputs"] for it in spec_items if not Path(it["outputs"]).is_file()]
    if deadline is not None and not run.failed:
        spec_items = [it for it in spec_items if Path(it["outputs"]).is_file()]
        missing = []
    if run.failed or missing:
        raise UserError(f"{sim} simulation failed ({run.failed} cocotb test(s) failed, "
                        f"{len(missing)} output file(s) missing); see {job}")
    wall = time.perf_counter() - t0
    outs = [Outputs.load(Path(it["outputs"])) for it in spec_items]
    total_cycles = sum(o.sim_cycles or 0 for o in outs) or 1
    for o in outs:
        o.backend = sim
        o.wall_s = wall * (o.sim_cycles or 0) / total_cycles
        o.waves = run.waves
        o.info.update({"verilog": str(rtl.path), "verilog_cached": rtl.cached,
                       "generate_s": round(gen_s, 3), "build_s": round(run.build_s, 3),
                       "sim_s": round(run.test_s * (o.sim_cycles or 0) / total_cycles, 3),
                       "launch_sim_s": round(run.test_s, 3), "built": run.built,
                       "job_dir": str(job)})
    if not waves:
        import shutil

        shutil.rmtree(job, ignore_errors=True)
    return outs


def check_board_link(port: str | None, baud: int | None) -> None:
    """Refuse a missing ``--port`` or a bad ``--baud`` for backend ``board`` (before any
    backend runs)."""
    if not port:
        raise UserError("backend board needs --port, the board's serial port "
                        "(e.g. --port /dev/ttyUSB1)")
    if baud is not None and baud <= 0:
        raise UserError(f"--baud must be a positive number of bits per second, not {baud}")


def board_baud(mf: ModelFolder) -> int:
    """The baud rate a board top for ``mf``'s target is built with by default (its board's
    ``default_baud``; :data:`xnorflow.hw.boards.DEFAULT_BAUD` for a target without one)."""
    from xnorflow.hw.boards import DEFAULT_BAUD
    from xnorflow.sw.boards import get_board

    return DEFAULT_BAUD if mf.target.board is None else get_board(mf.target.board).default_baud


def run_board(mf: ModelFolder, px: np.ndarray, *, port: str | None, baud: int | None = None,
              timeout: float | None = None, batch: int = 1, progress: bool = True,
              read_hidden: bool = True, load: bool = True, stream: bool = False) -> Outputs:
    """Run ``px`` on a board over the serial ``port`` (a device path or a pyserial URL):
    connect, check the geometry, load the model (unless ``load`` is false), classify
    ``batch`` images per START (at most the program's ``max_batch``) and, with
    ``read_hidden``, read every observable hidden map back. ``cycles`` are the board's own
    counts; ``wall_s`` includes the load. With ``stream`` the images go the fastest way
    (:meth:`~xnorflow.hw.link.HostSession.classify_stream`): scores and classes only, no
    hidden maps, no cycle counts.

    ``baud`` defaults to the rate the target's board top is built with (:func:`board_baud`);
    ``timeout`` (seconds, per read or write) to twice the time of the longest frame at
    ``baud``, at least 2 s.
    """
    import asyncio

    from tqdm import tqdm

    from xnorflow.hw.link import MAX_PAYLOAD, SerialTransport

    check_board_link(port, baud)
    baud = board_baud(mf) if baud is None else baud
    if timeout is None:
        timeout = max(2.0, 2 * 10 * (MAX_PAYLOAD + 5) / baud)  # 10 bits per character
    results: list = []
    state: dict = {}

    async def go(link) -> None:
        session = await open_session(link, mf, read_hidden=read_hidden and not stream,
                                     load=load)
        state["t0"] = time.perf_counter()
        state["step"] = session.images_per_start(batch)
        with tqdm(total=len(px), desc="board", unit="img", disable=not progress,
                  leave=False) as bar:
            if stream:
                results.extend(await session.classify_stream(
                    px, state["step"], lambda k, _: bar.update(k)))
            else:
                results.extend(await session.infer_all(px, batch, bar.update))

    t0 = time.perf_counter()
    with SerialTransport(port, baud, timeout=timeout) as link:
        asyncio.run(go(link))
    end = time.perf_counter()
    if stream:
        out = Outputs(backend="board",
                      predictions=np.array([c for c, _ in results], dtype=np.int64),
                      scores=np.array([s for _, s in results], dtype=np.int64),
                      activations=[None] * sum(1 for layer in mf.model.layers
                                               if layer.output == "threshold"),
                      cycles=None)
    else:
        out = collect(mf.model, results, "board")
    out.wall_s = end - t0
    out.info = {"port": port, "baud": baud, "images_per_start": state["step"],
                "loaded": load, "load_s": round(state["t0"] - t0, 3),
                "classify_s": round(end - state["t0"], 3)}
    return out


def _board(mf: ModelFolder, px: np.ndarray, *, port: str | None = None,
           baud: int | None = None, progress: bool = True, batch: int = 1, **_) -> Outputs:
    return run_board(mf, px, port=port, baud=baud, batch=batch, progress=progress)


_RUNNERS = {
    "torch": _torch,
    "golden": _golden,
    "cpu": _cpu,
    "amaranth": _amaranth,
    "icarus": _rtl("icarus"),
    "verilator": _rtl("verilator"),
    "board": _board,
}


def run(model_dir: str | Path | ModelFolder, inputs, backend: str, *,
        waves: str | Path | None = None, seed: int = 0, idle: float = 0.0,
        backpressure: float = 0.0, progress: bool = True, batch: int = 1,
        port: str | None = None, baud: int | None = None) -> Outputs:
    """Run the images ``inputs`` (``uint8 (N, H, W, C)``) through ``backend``.

    ``waves`` (hardware backends) names a waveform file to write (VCD for ``amaranth`` and
    ``verilator``, FST for ``icarus``). ``idle``/``backpressure`` (RTL backends) are the
    probabilities of random idle cycles and backpressure on the host streams, drawn from
    ``seed``. ``batch`` (hardware backends): images per START, capped at the program's
    ``max_batch`` (<= R); each image's ``cycles`` is then its share of its run's.
    ``port`` and ``baud`` (backend ``board``): the board's serial port and baud rate
    (default: the rate the target's board top is built with, :func:`board_baud`).
    """
    check_backend(backend)
    if backend == "board":
        check_board_link(port, baud)
    mf = model_dir if isinstance(model_dir, ModelFolder) else load_model(model_dir)
    px = _check_inputs(mf.model, inputs)
    if waves is not None and backend not in HARDWARE:
        raise UserError(f"--waves needs a simulated hardware backend ({', '.join(HARDWARE)}), "
                        f"not {backend!r}")
    wpath = Path(waves).resolve() if waves is not None else None
    if wpath is not None:
        wpath.parent.mkdir(parents=True, exist_ok=True)
    return _RUNNERS[backend](mf, px, waves=wpath, seed=seed, idle=idle,
                             backpressure=backpressure, progress=progress, batch=batch,
                             port=port, baud=baud)
