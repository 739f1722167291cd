"""Benchmark the fast CPU kernel (xnorflow.sw.cpu_kernel) against fp32 PyTorch, NumPy and LCE.

Every ratio is measured side by side in this one process: the sides run interleaved
(A, B, A, B, ...) with the same thread count (``torch.set_num_threads`` and the kernel's
``threads``), each sample averages enough calls for ~30 ms, JIT compilation happens before
any timing. Sections: GEMM, reference kernel, the measured xor+popcount+add peak of this CPU,
conv, whole CNN, thread scaling (1 vs 2 threads; the kernel's thread pool vs numba's prange),
and, when ``scripts/setup_peers.sh`` has set it up, Larq Compute Engine as a peer (its
interpreter in a worker process, ``benchmarks/peers.py``). The load average is recorded
before and after every section because the machine may be shared: with a load above
:data:`LOADED` the report says plainly that the run was loaded.

    .venv/bin/python benchmarks/cpu_kernel.py            # print the report
    .venv/bin/python benchmarks/cpu_kernel.py --save     # also write benchmarks/results/
    .venv/bin/python benchmarks/cpu_kernel.py --peers no # skip LCE even when it is set up
"""

from __future__ import annotations

import os

# OpenBLAS tuning variables can slow NumPy down on this machine; unset them for this process
# only, before NumPy is imported, and say so in the report.
_UNSET_ENV = {k: os.environ.pop(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
              if k in os.environ}
# torch's OpenMP spins at its barriers; on cores shared with other processes that costs it a
# scheduler time slice per parallel region and would flatter the kernel's 2-thread ratios.
# Passive waiting is the baseline's best setting here (set before torch loads libgomp).
_SET_ENV = {} if "OMP_WAIT_POLICY" in os.environ else {"OMP_WAIT_POLICY": "PASSIVE"}
os.environ.update(_SET_ENV)

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from llvmlite import binding as llvm  # noqa: E402
from numba import njit, prange  # noqa: E402

from xnorflow.sw import cpu_kernel as ck  # noqa: E402
from xnorflow.sw import cpu_threads, files, golden, reference, synthetic  # noqa: E402
from xnorflow.sw import encoding as enc  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
GOALS = {"gemm_1t": 10.0, "gemm_2t": 10.0, "conv": 6.0, "cnn": 5.0, "reference": 20.0,
         "peak": 0.70, "scaling": 1.7, "lce": 10.0}
#: A load average (1 min) above this on the machine's CPUs makes the run "loaded": thread
#: scaling and 2-thread figures then say more about the other users than about the kernels.
LOADED = 2.5


def cpu_info() -> dict:
    info = {"model": platform.processor() or "unknown", "mhz": None, "flags": []}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and info["model"] in ("unknown", "", "x86_64"):
            info["model"] = value
        elif key == "cpu MHz" and info["mhz"] is None:
            info["mhz"] = float(value)
        elif key in ("flags", "Features") and not info["flags"]:
            info["flags"] = value.split()
    return info


CPU_S: list[float] = [0.0]  # process CPU seconds per call of the last timed() sample


def timed(fn, inner: int) -> float:
    t0 = time.perf_counter()
    c0 = time.process_time()
    for _ in range(inner):
        fn()
    CPU_S[0] = (time.process_time() - c0) / inner
    return (time.perf_counter() - t0) / inner


def calibrate(fn, target_s: float = 0.03) -> int:
    fn()
    t = timed(fn, 1)
    return max(1, min(1000, int(target_s / max(t, 1e-7))))


#: Untimed seconds of interleaved warm-up before each side-by-side measurement.
WARMUP_S = 1.0

BEST: dict[str, float] = {}
CPU: dict[str, float] = {}
FASTEST: dict[str, float] = {}


def local(fn):
    """A sampler for an in-process callable: ``inner -> (wall s, CPU s) per call``.

    The kernel's spinning pool workers are parked first, so they never take CPU time from
    the other side's sample (torch, LCE) on the same cores.
    """
    def sample(inner: int) -> tuple[float, float]:
        cpu_threads.park()
        return timed(fn, inner), CPU_S[0]
    return sample


def interleave(samplers: list, repeats: int) -> tuple[list[float], list[float], list[float]]:
    """Median wall s/call, fastest wall s/call and median CPU s/call of each sampler.

    A sampler is ``inner -> (wall, cpu)`` per call (:func:`local`, or LCE's worker); the
    samplers run in turn, ``repeats`` rounds, each sample ~30 ms, after a warm-up of
    :data:`WARMUP_S` in which they also run in turn (untimed): on this machine the first
    second of 2-thread work in a fresh process runs slower than the rest.
    """
    inner = []
    for smp in samplers:
        w, _ = smp(1)
        inner.append(max(1, min(1000, int(0.03 / max(w, 1e-7)))))
    t_end = time.perf_counter() + WARMUP_S
    while time.perf_counter() < t_end:
        for i, smp in enumerate(samplers):
            smp(inner[i])
    walls = [[] for _ in samplers]
    cpus = [[] for _ in samplers]
    for _ in range(repeats):
        for i, smp in enumerate(samplers):
            w, c = smp(inner[i])
            walls[i].append(w)
            cpus[i].append(c)
    return ([statistics.median(w) for w in walls], [min(w) for w in walls],
            [statistics.median(c) for c in cpus])


def side_by_side(fast, slow, repeats: int, key: str = "") -> tuple[float, float]:
    """Median wall seconds per call of ``fast`` and ``slow``, sampled interleaved.

    Two further views are kept under ``key``: the ratio of the best (minimum) wall samples
    (:data:`BEST`) and the ratio of median process CPU times (:data:`CPU`; meaningful at one
    thread only, where it is immune to the OS descheduling the process on a shared machine).
    The report's goals are judged on the wall-clock medians.
    """
    med, fastest, cpu = interleave([local(fast), local(slow)], repeats)
    if key:
        BEST[key] = fastest[1] / fastest[0]
        FASTEST[key] = fastest[0]
        CPU[key] = cpu[1] / max(cpu[0], 1e-12)
    return med[0], med[1]


# ---- the xor + popcount + add peak of this CPU ---------------------------------------------
# LLVM vectorises the k loop; each loaded vector of A meets 8 (or 16) constant words held in
# registers, so the loop is XOR, popcount and add with one load per 8 (16) popcounts: the
# throughput the instruction mix allows, with operands in registers. Measured, not assumed.

@njit(nogil=True)
def _peak8(a, c, reps):
    c0, c1, c2, c3, c4, c5, c6, c7 = c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = np.uint64(0)
    for _ in range(reps):
        for k in range(a.shape[0]):
            x = a[k]
            s0 += ck._ctpop(x ^ c0)
            s1 += ck._ctpop(x ^ c1)
            s2 += ck._ctpop(x ^ c2)
            s3 += ck._ctpop(x ^ c3)
            s4 += ck._ctpop(x ^ c4)
            s5 += ck._ctpop(x ^ c5)
            s6 += ck._ctpop(x ^ c6)
            s7 += ck._ctpop(x ^ c7)
        c0 += np.uint64(1)  # the sums depend on every repetition: nothing is hoisted
    return s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7


@njit(nogil=True)
def _peak16(a, c, reps):
    c0, c1, c2, c3, c4, c5, c6, c7 = c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]
    d0, d1, d2, d3, d4, d5, d6, d7 = c[8], c[9], c[10], c[11], c[12], c[13], c[14], c[15]
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = np.uint64(0)
    t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = np.uint64(0)
    for _ in range(reps):
        for k in range(a.shape[0]):
            x = a[k]
            s0 += ck._ctpop(x ^ c0)
            s1 += ck._ctpop(x ^ c1)
            s2 += ck._ctpop(x ^ c2)
            s3 += ck._ctpop(x ^ c3)
            s4 += ck._ctpop(x ^ c4)
            s5 += ck._ctpop(x ^ c5)
            s6 += ck._ctpop(x ^ c6)
            s7 += ck._ctpop(x ^ c7)
            t0 += ck._ctpop(x ^ d0)
            t1 += ck._ctpop(x ^ d1)
            t2 += ck._ctpop(x ^ d2)
            t3 += ck._ctpop(x ^ d3)
            t4 += ck._ctpop(x ^ d4)
            t5 += ck._ctpop(x ^ d5)
            t6 += ck._ctpop(x ^ d6)
            t7 += ck._ctpop(x ^ d7)
        c0 += np.uint64(1)
    return (s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7) + (t0 + t1 + t2 + t3 + t4 + t5 + t6 + t7)


@njit(parallel=True)
def _empty_prange(n, out):
    for t in prange(n):
        out[t] = t


@njit(nogil=True)
def _empty_job(ctrl, gen, ntiles, out):
    while True:
        t = cpu_threads.grab(ctrl, gen, ntiles)
        if t < 0:
            return
        out[t] = t
        cpu_threads.tile_done(ctrl)


def launch_overheads(conv_job_args: tuple) -> dict:
    """Median microseconds of launching empty work: a 16-iteration ``prange`` loop at 1 and 2
    threads, a 16-tile pool job at 2 threads, and numba's dispatch of the conv's pool job
    with no tile (what a worker pays to join)."""
    buf = np.zeros(16, np.int64)
    ctrl = np.zeros(cpu_threads._CTRL_LEN, np.int64)

    def med(fn, n=300) -> float:
        fn()
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts) * 1e6

    res = {}
    for t in (1, 2):
        numba.set_num_threads(t)
        res[f"prange_{t}t_us"] = med(lambda: _empty_prange(16, buf))
    res["pool_2t_us"] = med(lambda: cpu_threads.run(_empty_job, 16, (buf,), 2))
    res["join_dispatch_us"] = med(lambda: ck._popcount_job(ctrl, -5, 0, *conv_job_args))
    numba.set_num_threads(1)
    return res


def load_text(la) -> str:
    return f"{la[0]:.2f} {la[1]:.2f} {la[2]:.2f}"


def best(key: str) -> str:
    if key not in BEST:
        return ""
    text = f"[best samples {BEST[key]:5.1f}x"
    if numba.get_num_threads() == 1 and key in CPU:
        text += f", CPU time {CPU[key]:5.1f}x"
    return text + "]"


def set_threads(n: int) -> None:
    torch.set_num_threads(n)
    numba.set_num_threads(n)


def torch_cnn() -> torch.nn.Module:
    """The fp32 network with the Fashion-MNIST CNN's shape (BatchNorm + hardtanh + max-pool)."""
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.Hardtanh(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.Hardtanh(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 256), nn.BatchNorm1d(256), nn.Hardtanh(),
        nn.Linear(256, 10),
    ).eval()


def lce_section(args, out, section, threads_list, a_bits, w_bits, a_words, w_words, a_f, w_f,
                conv, pconv, xbits, xin, xf, wf, prepared, px, net, xt, rng) -> dict:
    """Larq Compute Engine on the same workloads, interleaved with the kernel and torch."""
    if args.peers == "no":
        out("## Larq Compute Engine peer: skipped (--peers no)")
        return {}
    ok, msg = peers.ready(args.peers_dir)
    if not ok:
        if args.peers == "yes":
            print(f"cpu_kernel: --peers yes, but {msg}", file=sys.stderr)
            raise SystemExit(2)
        out(f"## Larq Compute Engine peer: skipped ({msg})")
        return {}
    m, k = a_bits.shape
    n = w_bits.shape[0]
    batch = px.shape[0]
    vals = enc.bits_to_values
    x_gemm = vals(a_bits).astype(np.float32).reshape(1, 16, 16, k)
    x_conv = vals(xbits).astype(np.float32)
    x_cnn = px.astype(np.float32) / 255.0
    lrng = np.random.default_rng(1)

    def pm1(*shape):
        return np.where(lrng.random(shape) < 0.5, -1.0, 1.0).astype(np.float32)

    cnn_w = {"c0": pm1(3, 3, 1, 32), "c1": pm1(3, 3, 32, 64), "d0": pm1(3136, 256),
             "d1": pm1(256, 10)}
    for i, c in enumerate((32, 64, 256, 10)):
        cnn_w[f"bn{i}_beta"] = lrng.normal(0, 0.1, c).astype(np.float32)
        cnn_w[f"bn{i}_mean"] = lrng.normal(0, 1, c).astype(np.float32)
        cnn_w[f"bn{i}_var"] = lrng.uniform(0.5, 2, c).astype(np.float32)
    conv_w = vals(conv.weights).astype(np.float32).transpose(1, 2, 3, 0)  # (kh, kw, in, out)
    gemm_w = vals(w_bits).astype(np.float32).T.reshape(1, 1, k, n)
    specs = [
        {"name": "gemm", "kind": "bconv", "input": [16, 16, k], "filters": n, "k": 1,
         "padding": "valid", "weights": {"kernel": gemm_w}},
        {"name": "gemm_floor", "kind": "bconv", "input": [16, 16, k], "filters": 8, "k": 1,
         "padding": "valid", "weights": {"kernel": np.ascontiguousarray(gemm_w[..., :8])}},
        {"name": "conv", "kind": "bconv", "input": [16, 16, 256], "filters": 256, "k": 3,
         "padding": "same", "weights": {"kernel": conv_w}},
        {"name": "cnn", "kind": "cnn", "batch": batch, "weights": cnn_w},
    ]
    inputs = {"gemm": x_gemm, "gemm_floor": x_gemm, "conv": x_conv, "cnn": x_cnn}
    end = section("lce", "Larq Compute Engine (LCE) as a peer: same workloads, interleaved "
                  "(xnorflow kernel, LCE, fp32 torch)")
    lce = peers.LCE(args.peers_dir)
    res: dict = {}
    try:
        t0 = time.perf_counter()
        paths = lce.models_for(specs)
        conv_s = time.perf_counter() - t0
        ver = lce.versions()
        conv_meta = json.loads(Path(str(paths["gemm"]) + ".ops.json").read_text())
        res["versions"] = {**ver, "tensorflow (converter)": conv_meta["tensorflow"],
                           "larq (converter)": conv_meta["larq"]}
        out(f"  LCE {ver['larq-compute-engine']} interpreter (numpy {ver['numpy']}, Python "
            f"{ver['python']}, its own venv, a worker process: benchmarks/lce_worker.py); "
            f"converter: TensorFlow {conv_meta['tensorflow']}, larq {conv_meta['larq']}")
        how = (f"converted now ({', '.join(lce.converted)}), {conv_s:.0f} s" if lce.converted
               else "cached .tflite files")
        out(f"  models ({how}; {args.peers_dir.name}/models/), interpreter with "
            "use_indirect_bgemm=True, timed with predict() (float input copied in, "
            "binarised by LCE, float output copied out):")
        desc = {
            "gemm": "GEMM as a 1x1 binary conv on a 16x16x4096 map (LCE has no binary dense "
                    "op), 256 filters, float out",
            "gemm_floor": "the same input with 8 filters: what the GEMM model costs besides "
                          "the GEMM (input copy, binarise, 1/32 of the MACs)",
            "conv": "3x3 binary conv 256->256 on 16x16, padding 'same' (LCE pads with +1; "
                    "xnorflow's contract pads with -1), float out",
            "cnn": f"Fashion-MNIST CNN shape, batch {batch}: float first conv (binary weights), "
                   "BatchNorm + sign, max-pool, binary conv, binary dense x2",
        }
        for name in paths:
            out(f"    {name:10s}: {desc[name]}; ops {' '.join(lce.ops[name])}")
        res["ops"] = lce.ops
        for t in threads_list:
            for name in paths:
                lce.load(f"{name}_{t}t", paths[name], t, inputs[name])

        # ---- outputs against the golden model where the semantics match ----
        checks = {}
        kk = k
        for t in threads_list:
            got = lce.output(f"gemm_{t}t").reshape(m, n).astype(np.int64)
            dot = enc.dot_from_popcount(reference.xnor_gemm(a_words, w_words), kk)
            checks[f"gemm_{t}t"] = bool(np.array_equal(got, dot))
        kc = conv.k_valid
        acc_c = golden.layer_accumulators(conv, xbits)[0]
        dot_c = enc.dot_from_popcount(acc_c, kc)
        xpad = np.pad(xbits, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=1)
        conv_p = dataclasses.replace(conv, pad=0, in_h=18, in_w=18)
        dot_p = enc.dot_from_popcount(golden.layer_accumulators(conv_p, xpad)[0], kc)
        border_diff = 0
        for t in threads_list:
            got = lce.output(f"conv_{t}t")[0].astype(np.int64)
            checks[f"conv_plus1_{t}t"] = bool(np.array_equal(got, dot_p))
            checks[f"conv_interior_{t}t"] = bool(np.array_equal(got[1:-1, 1:-1],
                                                                dot_c[1:-1, 1:-1]))
            border_diff = int((got != dot_c).any(axis=-1).sum())
        res["checks"] = checks
        ok_g = all(v for kx, v in checks.items() if kx.startswith("gemm"))
        out(f"  check GEMM: LCE's outputs == the golden/reference dot products 2P - K, all "
            f"{m * n} values, every thread count: {'yes' if ok_g else 'NO'}")
        ok_p = all(v for kx, v in checks.items() if kx.startswith("conv_plus1"))
        ok_i = all(v for kx, v in checks.items() if kx.startswith("conv_interior"))
        out(f"  check conv: LCE == golden model on the input padded with +1 (LCE's padding), "
            f"all 16x16x256: {'yes' if ok_p else 'NO'}; == xnorflow's conv (pad -1) on the 14x14 "
            f"interior: {'yes' if ok_i else 'NO'}; border pixels that differ (padding): "
            f"{border_diff} of 60")
        out("  check CNN: not compared -- the semantics differ: LCE pads the binary conv with "
            "+1 and the float first conv with 0.0, thresholds are float BatchNorm, the first "
            "layer is a float conv of real pixels (xnorflow: 8 bit-planes, integer thresholds, "
            "-1 padding); the LCE model has random weights of the same shape: timing only")
        res["cnn_compared"] = False

        # ---- timing ----
        def lce_sampler(key):
            def sample(inner: int) -> tuple[float, float]:
                cpu_threads.park()
                return lce.time(key, inner)
            return sample

        kernels = {
            "gemm": lambda t: (lambda: ck.xnor_gemm(a_words, w_words, threads=t)),
            "conv": lambda t: (lambda: _conv_call(pconv, xin, t)),
            "cnn": lambda t: (lambda: ck.run(prepared, px, threads=t, intermediates=False)),
        }
        torches = {"gemm": lambda: torch.matmul(a_f, w_f),
                   "conv": lambda: F.conv2d(xf, wf, padding=1), "cnn": lambda: net(xt)}
        res["timing"] = {}
        out("  workload  thr   xnorflow        LCE      torch   LCE/xnorflow (goal >= "
            f"{GOALS['lce']:.0f}x)   torch/LCE   [CPU time LCE/xnorflow]")
        for t in threads_list:
            set_threads(t)
            with torch.inference_mode():
                for name in ("gemm", "conv", "cnn"):
                    med, fastest, cpu = interleave([local(kernels[name](t)),
                                                    lce_sampler(f"{name}_{t}t"),
                                                    local(torches[name])], args.repeats)
                    r = med[1] / med[0]
                    rc = cpu[1] / max(cpu[0], 1e-12)
                    out(f"  {name:8s}  {t}   {med[0] * 1e3:8.3f} ms {med[1] * 1e3:8.3f} ms "
                        f"{med[2] * 1e3:8.3f} ms   {r:6.1f}x "
                        f"{'met' if r >= GOALS['lce'] else 'MISSED':6s}            "
                        f"{med[2] / med[1]:5.2f}x   [{rc:5.1f}x]")
                    res["timing"][f"{name}_{t}t"] = {
                        "kernel_s": med[0], "lce_s": med[1], "torch_s": med[2], "ratio": r,
                        "torch_over_lce": med[2] / med[1], "cpu_time_ratio": rc,
                        "best_sample_ratio": fastest[1] / fastest[0],
                        "kernel_cpu_s": cpu[0], "lce_cpu_s": cpu[1]}
                med, _, _ = interleave([lce_sampler(f"gemm_floor_{t}t"),
                                        lce_sampler(f"gemm_{t}t")], max(3, args.repeats // 3))
                g = res["timing"][f"gemm_{t}t"]
                out(f"  gemm_floor {t}: LCE {med[0] * 1e3:.3f} ms for the same input with 8 "
                    f"filters (GEMM model {med[1] * 1e3:.3f} ms in these samples): without that "
                    f"floor LCE/xnorflow would be {(med[1] - med[0]) / g['kernel_s']:.1f}x")
                g["lce_floor_s"] = med[0]
                g["ratio_without_floor"] = (med[1] - med[0]) / g["kernel_s"]
    finally:
        lce.close()
    end()
    return res


def _conv_call(pconv, xin, t: int) -> None:
    with ck._numba_threads(t) as used:
        ck._forward(pconv, xin, keep_acc=False, used=used)


def summary(out, res: dict, threads_list, batch, n, k, gemm_packed) -> None:
    out("## summary (markdown, copied into docs/cpu-kernel.md)")
    out()
    out("| workload | threads | kernel | fp32 torch / reference | ratio (median) | goal | "
        "best samples | CPU time |")
    out("|---|---|---|---|---|---|---|---|")

    def row(name, t, d, base, goal):
        verdict = "met" if d["ratio"] >= goal else "**missed**"
        cpu = f"{d['cpu_time_ratio']:.1f}x" if t == 1 else "-"
        out(f"| {name} | {t} | {d['kernel_s'] * 1e3:.3f} ms | {d[base] * 1e3:.3f} ms | "
            f"{d['ratio']:.1f}x | >= {goal:.0f}x {verdict} | {d['best_sample_ratio']:.1f}x | "
            f"{cpu} |")

    for t in threads_list:
        row("GEMM 256x256, K=4096 vs torch.matmul", t, res["gemm"][f"gemm_{t}t"], "torch_s",
            GOALS[f"gemm_{t}t"])
    row("same GEMM vs NumPy reference kernel", 1, res["reference"], "reference_s",
        GOALS["reference"])
    for t in threads_list:
        row("conv 3x3 256->256, 16x16 vs F.conv2d", t, res["conv"][f"{t}t"], "torch_s",
            GOALS["conv"])
    for t in threads_list:
        row(f"CNN batch {batch} vs fp32 torch CNN", t, res["cnn"][f"{t}t"], "torch_s",
            GOALS["cnn"])
    out(f"| weight memory, K % 64 == 0 | - | {gemm_packed} B | {n * k * 4} B | "
        f"{n * k * 4 / gemm_packed:.2f}x | 32x | - | - |")
    out()
    pk = res["peak"]
    out("| measure | goal | measured | verdict |")
    out("|---|---|---|---|")
    out(f"| GEMM binary MAC/s vs the measured xor+popcount+add peak, 1 thread | >= "
        f"{100 * GOALS['peak']:.0f} % | {pk['gemm_mac_per_s'] / 1e9:.0f} / "
        f"{pk['peak_mac_per_s'] / 1e9:.0f} G/s = {100 * pk['fraction']:.0f} % | "
        f"{'met' if pk['fraction'] >= GOALS['peak'] else '**missed**'} |")
    for name, d in res["scaling"].items():
        if name == "launch_us":
            continue
        out(f"| {name}: 2-thread / 1-thread throughput (pool; prange "
            f"{d['speedup_prange']:.2f}x) | >= {GOALS['scaling']}x | {d['speedup_pool']:.2f}x "
            f"| {'met' if d['speedup_pool'] >= GOALS['scaling'] else '**missed**'} |")
    for key, d in res.get("lce", {}).get("timing", {}).items():
        name, t = key.rsplit("_", 1)
        out(f"| {name} vs LCE, {t[:-1]} thread(s): xnorflow {d['kernel_s'] * 1e3:.3f} ms, LCE "
            f"{d['lce_s'] * 1e3:.3f} ms (torch {d['torch_s'] * 1e3:.3f} ms) | >= "
            f"{GOALS['lce']:.0f}x | {d['ratio']:.1f}x | "
            f"{'met' if d['ratio'] >= GOALS['lce'] else '**missed**'} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15, help="interleaved samples per side")
    ap.add_argument("--save", action="store_true",
                    help="write benchmarks/results/cpu_kernel.txt and .json")
    ap.add_argument("--peers", choices=("auto", "yes", "no"), default="auto",
                    help="LCE peer section: auto (when scripts/setup_peers.sh has set it up), "
                         "yes (fail if it is not), no")
    ap.add_argument("--peers-dir", type=Path, default=peers.DEFAULT_DIR,
                    help="where scripts/setup_peers.sh put LCE (default: .peers)")
    ap.add_argument("--out", type=Path, default=RESULTS / "cpu_kernel",
                    help="with --save: write OUT.txt and OUT.json (default: "
                         "benchmarks/results/cpu_kernel)")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, not {args.repeats}")

    lines: list[str] = []
    res: dict = {"goals": GOALS, "load": {}}

    def out(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    loads: list[float] = []

    def section(name: str, title: str):
        """Print a section title with the load average now; returns a closer for the end."""
        la = os.getloadavg()
        loads.append(la[0])
        out(f"## {title}   [load {load_text(la)} at start]")

        def end() -> None:
            lb = os.getloadavg()
            loads.append(lb[0])
            res["load"][name] = {"start": la, "end": lb}
            out(f"  [load {load_text(lb)} at end of section]")
        return end

    info = cpu_info()
    flags = set(info["flags"])
    max_threads = numba.config.NUMBA_NUM_THREADS
    threads_list = [1, 2] if max_threads >= 2 else [1]
    load0 = os.getloadavg()
    out("# xnorflow CPU kernel benchmark (benchmarks/cpu_kernel.py)")
    out(f"date (UTC)      : {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())}")
    out(f"CPU             : {info['model']}, {os.cpu_count()} logical CPUs, "
        f"cpu MHz {info['mhz']} (/proc/cpuinfo)")
    simd = [f for f in ("popcnt", "avx2", "avx512f", "avx512bw", "avx512_vpopcntdq",
                        "avx512_bitalg", "asimd") if f in flags]
    out(f"SIMD flags      : {' '.join(simd) or 'none of popcnt/avx2/avx512'}")
    out(f"python          : {platform.python_version()}")
    out(f"numba           : {numba.__version__}, LLVM target {llvm.get_host_cpu_name()}, "
        f"NUMBA_NUM_THREADS {max_threads}")
    backend = next((ln.split(":", 1)[1].strip() for ln in
                    torch.__config__.parallel_info().splitlines()
                    if ln.startswith("ATen parallel backend")), "?")
    out(f"torch           : {torch.__version__}, default threads {torch.get_num_threads()}, "
        f"interop {torch.get_num_interop_threads()}, parallel backend {backend}, "
        f"mkldnn {torch.backends.mkldnn.enabled}, OMP_NUM_THREADS "
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, OMP_WAIT_POLICY "
        f"{os.environ.get('OMP_WAIT_POLICY')}"
        f"{' (set by this script)' if _SET_ENV else ''}; fp32, inference_mode")
    out(f"numpy           : {np.__version__}; unset for this process: "
        f"{', '.join(f'{k}={v}' for k, v in _UNSET_ENV.items()) or 'nothing (none set)'}")
    out(f"load average    : {load_text(load0)} (1/5/15 min, at start)")
    out(f"method          : interleaved samples, median of {args.repeats} per side, after "
        f"{WARMUP_S:g} s of interleaved untimed warm-up; each sample averages enough calls "
        "for ~30 ms; goals judged on wall-clock medians")
    out("                  [best samples: ratio of the fastest samples; CPU time (1 thread "
        "only): ratio of median process CPU seconds, immune to descheduling]")
    res["machine"] = {"cpu": info["model"], "mhz": info["mhz"], "simd": simd,
                      "logical_cpus": os.cpu_count(), "load_start": load0,
                      "python": platform.python_version(),
                      "numba": numba.__version__, "torch": torch.__version__,
                      "numpy": np.__version__,
                      "llvm_cpu": llvm.get_host_cpu_name(), "unset_env": _UNSET_ENV}
    rng = np.random.default_rng(0)

    # ---- JIT warm-up (compilation or cache load, not timed) ----------------------------------
    t0 = time.perf_counter()
    model = synthetic.fashion_cnn(seed=0)
    prepared = ck.prepare(model)
    for t in threads_list:
        ck.run(prepared, rng.integers(0, 256, (2, 28, 28, 1), dtype=np.uint8), threads=t)
        ck.xnor_gemm(np.zeros((64, 64), np.uint64), np.zeros((64, 64), np.uint64), threads=t)
    pk_a = rng.integers(0, 2**63, 64, dtype=np.uint64)
    pk_c = rng.integers(0, 2**63, 16, dtype=np.uint64)
    _peak8(pk_a, pk_c, 1)
    _peak16(pk_a, pk_c, 1)
    out(f"JIT warm-up     : {time.perf_counter() - t0:.1f} s (compile or load cache; not timed)")
    out(f"threads         : {ck.PARALLEL!r} (sw/cpu_threads.py: the caller and spinning "
        f"workers take tiles one at a time; a worker spins {cpu_threads.SPIN_SECONDS * 1e3:.0f}"
        " ms after a job, then sleeps); numba prange layer for comparison: "
        f"{numba.config.THREADING_LAYER!r}")
    out()

    # ---- GEMM -------------------------------------------------------------------------------
    m = n = 256
    k = 4096
    a_bits = rng.integers(0, 2, (m, k), dtype=np.uint8)
    w_bits = rng.integers(0, 2, (n, k), dtype=np.uint8)
    a_words = enc.pack_bits(a_bits, 64, enc.ACT_PAD_BIT)
    w_words = enc.pack_bits(w_bits, 64, enc.WEIGHT_PAD_BIT)
    for t in threads_list:
        assert np.array_equal(ck.xnor_gemm(a_words, w_words, threads=t),
                              reference.xnor_gemm(a_words, w_words))
    a_f = torch.from_numpy(enc.bits_to_values(a_bits).astype(np.float32))
    w_f = torch.from_numpy(enc.bits_to_values(w_bits).T.astype(np.float32)).contiguous()
    macs = m * n * k
    end = section("gemm", f"GEMM M=N={m}, K={k} bits: xnor_gemm (packed uint64) vs "
                  "torch.matmul fp32")
    res["gemm"] = {}
    for t in threads_list:
        set_threads(t)
        key = f"gemm_{t}t"
        tk, tt = side_by_side(lambda: ck.xnor_gemm(a_words, w_words),
                              lambda: torch.matmul(a_f, w_f), args.repeats, key)
        ratio = tt / tk
        out(f"  {t} thread(s): kernel {tk * 1e3:8.3f} ms   torch {tt * 1e3:8.3f} ms   "
            f"ratio {ratio:6.1f}x  (goal >= {GOALS[key]:.0f}x: "
            f"{'met' if ratio >= GOALS[key] else 'MISSED'}) {best(key)}")
        res["gemm"][key] = {"kernel_s": tk, "torch_s": tt, "ratio": ratio,
                            "best_sample_ratio": BEST[key], "cpu_time_ratio": CPU[key]}
    end()

    # ---- reference kernel --------------------------------------------------------------------
    set_threads(1)
    end = section("reference", "same GEMM vs the NumPy reference kernel (sw/reference.py), "
                  "1 thread")
    tk, tr = side_by_side(lambda: ck.xnor_gemm(a_words, w_words),
                          lambda: reference.xnor_gemm(a_words, w_words), max(3, args.repeats // 3),
                          "reference")
    ratio = tr / tk
    out(f"  kernel {tk * 1e3:8.3f} ms   reference {tr * 1e3:8.3f} ms   ratio {ratio:6.1f}x  "
        f"(goal >= {GOALS['reference']:.0f}x: "
        f"{'met' if ratio >= GOALS['reference'] else 'MISSED'}) {best('reference')}")
    res["reference"] = {"kernel_s": tk, "reference_s": tr, "ratio": ratio,
                        "best_sample_ratio": BEST["reference"], "cpu_time_ratio": CPU["reference"]}
    end()

    # ---- measured peak -----------------------------------------------------------------------
    mhz = info["mhz"] or 0.0
    end = section("peak", "GEMM vs the measured xor+popcount+add peak of this CPU, 1 thread")
    set_threads(1)
    reps = 2000
    pk_macs = {8: reps * 64 * 64 * 8, 16: reps * 64 * 64 * 16}
    med, fastest, cpu = interleave([
        local(lambda: ck.xnor_gemm(a_words, w_words)),
        local(lambda: _peak8(pk_a, pk_c, reps)),
        local(lambda: _peak16(pk_a, pk_c, reps)),
    ], args.repeats)
    rate = {"gemm": macs / med[0], 8: pk_macs[8] / med[1], 16: pk_macs[16] / med[2]}
    rate_cpu = {"gemm": macs / cpu[0], 8: pk_macs[8] / cpu[1], 16: pk_macs[16] / cpu[2]}
    peak_acc = max((8, 16), key=lambda a: rate[a])
    peak = rate[peak_acc]
    frac = rate["gemm"] / peak
    frac_cpu = rate_cpu["gemm"] / max(rate_cpu[8], rate_cpu[16])
    vp = "vpopcntq (AVX-512 VPOPCNTDQ)" if "avx512_vpopcntdq" in flags else (
        "no vector popcount flag" if "avx2" in flags else "scalar popcnt")
    out(f"  CPU flags: {vp}; LLVM target {llvm.get_host_cpu_name()}")
    out(f"  peak loop, 8 constants in registers : {rate[8] / 1e9:7.1f} G binary MAC/s "
        f"({rate[8] / (mhz * 1e6) if mhz else float('nan'):.0f} per cycle at the "
        f"{mhz:.0f} MHz of /proc/cpuinfo)")
    out(f"  peak loop, 16 constants in registers: {rate[16] / 1e9:7.1f} G binary MAC/s "
        f"({rate[16] / (mhz * 1e6) if mhz else float('nan'):.0f} per cycle)")
    out(f"  GEMM 256x256x4096, 1 thread          : {rate['gemm'] / 1e9:7.1f} G binary MAC/s "
        f"({rate['gemm'] / (mhz * 1e6) if mhz else float('nan'):.0f} per cycle)")
    out(f"  GEMM / measured peak ({peak_acc} constants): {100 * frac:5.1f} % of peak "
        f"(goal >= {100 * GOALS['peak']:.0f} %: {'met' if frac >= GOALS['peak'] else 'MISSED'}"
        f"; CPU-time view {100 * frac_cpu:.1f} %)")
    out("  (the cycle figures assume the nominal clock; the percentage compares two rates "
        "measured side by side, so the real clock cancels)")
    res["peak"] = {"peak_mac_per_s": peak, "peak_variant": peak_acc,
                   "peak8_mac_per_s": rate[8], "peak16_mac_per_s": rate[16],
                   "gemm_mac_per_s": rate["gemm"], "fraction": frac,
                   "fraction_cpu_time": frac_cpu, "nominal_mhz": mhz,
                   "gemm_mac_per_nominal_cycle": rate["gemm"] / (mhz * 1e6) if mhz else None,
                   "peak_mac_per_nominal_cycle": peak / (mhz * 1e6) if mhz else None}
    end()
    out()

    # ---- convolution -------------------------------------------------------------------------
    conv = synthetic.random_layer(rng, name="conv3x3", kind="conv", in_shape=(16, 16, 256),
                                  out_c=256, k=3, pad=1)
    pconv = ck.prepare_layer(conv)
    xbits = rng.integers(0, 2, (1, 16, 16, 256), dtype=np.uint8)
    xin = ck._Act(1, packed=enc.pack_bits(xbits, 64).astype(np.uint64)[None], channels=256)
    want = golden.output_stage(conv, golden.layer_accumulators(conv, xbits))
    for t in threads_list:
        with ck._numba_threads(t) as used:
            got, _ = ck._forward(pconv, xin, keep_acc=False, used=used)
        assert np.array_equal(got.get_levels(), want)

    def conv_kernel(t: int):
        def f():
            with ck._numba_threads(t) as used:
                ck._forward(pconv, xin, keep_acc=False, used=used)
        return f

    xf = torch.from_numpy(enc.bits_to_values(xbits).astype(np.float32)).permute(0, 3, 1, 2)
    xf = xf.contiguous()
    wf = torch.from_numpy(enc.bits_to_values(conv.weights).astype(np.float32))
    wf = wf.permute(0, 3, 1, 2).contiguous()
    end = section("conv", "conv 3x3, 256 -> 256 channels, 16x16 map, pad 1, batch 1: packed "
                  "in -> threshold -> packed out vs F.conv2d fp32")
    res["conv"] = {}
    for t in threads_list:
        set_threads(t)
        tk, tt = side_by_side(conv_kernel(t), lambda: F.conv2d(xf, wf, padding=1),
                              args.repeats, f"conv_{t}t")
        ratio = tt / tk
        out(f"  {t} thread(s): kernel {tk * 1e3:8.3f} ms   torch {tt * 1e3:8.3f} ms   "
            f"ratio {ratio:6.1f}x  (goal >= {GOALS['conv']:.0f}x: "
            f"{'met' if ratio >= GOALS['conv'] else 'MISSED'}) {best(f'conv_{t}t')}")
        res["conv"][f"{t}t"] = {"kernel_s": tk, "torch_s": tt, "ratio": ratio,
                                "best_sample_ratio": BEST[f"conv_{t}t"],
                                "cpu_time_ratio": CPU[f"conv_{t}t"]}
    end()
    out()

    # ---- whole CNN ---------------------------------------------------------------------------
    batch = 256
    px = rng.integers(0, 256, (batch, 28, 28, 1), dtype=np.uint8)
    net = torch_cnn()
    xt = torch.from_numpy(px.astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()
    paths = ", ".join(f"{p.layer.name}:{p.path}{'/dense' if p.dense else ''}"
                      f"/Kw={p.kwords}{'/4x4' if p.blocked else '/rows'}"
                      for p in prepared.layers)
    want_cnn = golden.run(model, px[:8])
    for t in threads_list:
        got_cnn = ck.run(prepared, px[:8], threads=t)
        assert np.array_equal(got_cnn.scores, want_cnn.scores)
    end = section("cnn", f"Fashion-MNIST-shaped CNN, batch {batch}: run(intermediates=False) "
                  "vs the same network in fp32 torch (inference_mode)")
    out(f"  network: conv 1->32 3x3 pad1 + pool2, conv 32->64 3x3 pad1 + pool2, dense "
        f"3136->256, dense 256->10; first layer {model.layers[0].in_bits}-bit pixels")
    out(f"  kernel paths: {paths}")
    res["cnn"] = {}
    with torch.inference_mode():
        for t in threads_list:
            set_threads(t)
            tk, tt = side_by_side(lambda: ck.run(prepared, px, intermediates=False),
                                  lambda: net(xt), args.repeats, f"cnn_{t}t")
            ratio = tt / tk
            out(f"  {t} thread(s): kernel {tk * 1e3:7.2f} ms ({batch / tk:6.0f} img/s)  "
                f"torch {tt * 1e3:7.2f} ms ({batch / tt:5.0f} img/s)  ratio {ratio:5.1f}x  "
                f"(goal >= {GOALS['cnn']:.0f}x: {'met' if ratio >= GOALS['cnn'] else 'MISSED'}) "
                f"{best(f'cnn_{t}t')}")
            res["cnn"][f"{t}t"] = {"kernel_s": tk, "torch_s": tt, "ratio": ratio,
                                   "kernel_images_per_s": batch / tk,
                                   "best_sample_ratio": BEST[f"cnn_{t}t"],
                                   "cpu_time_ratio": CPU[f"cnn_{t}t"]}
    set_threads(1)
    gb = 8
    tk, tg = side_by_side(lambda: ck.run(prepared, px[:gb]), lambda: golden.run(model, px[:gb]),
                          3)
    out(f"  vs the golden model (NumPy), batch {gb}, both with intermediates, 1 thread: "
        f"kernel {tk * 1e3:.2f} ms, golden {tg * 1e3:.1f} ms, ratio {tg / tk:.0f}x")
    res["cnn"]["golden"] = {"batch": gb, "kernel_s": tk, "golden_s": tg, "ratio": tg / tk}
    # where the kernel's CNN time goes: each layer alone on its real input, interleaved
    acts = [ck._Act(model.layers[0].in_bits, channels=model.in_c,
                    levels=np.ascontiguousarray(enc.quantize_pixels(px, model.layers[0].in_bits)))]
    for pl in prepared.layers[:-1]:
        acts.append(ck._forward(pl, acts[-1], False, 1)[0])
    med, _, _ = interleave([local(lambda pl=pl, x=x: ck._forward(pl, x, False, 1))
                            for pl, x in zip(prepared.layers, acts, strict=True)], args.repeats)
    total = sum(med)
    out(f"  per layer, batch {batch}, 1 thread (each layer alone, interleaved): " + ", ".join(
        f"{pl.layer.name} {m * 1e3:.2f} ms ({100 * m / total:.0f} %)"
        for pl, m in zip(prepared.layers, med, strict=True)))
    res["cnn"]["layers_1t_s"] = {pl.layer.name: m for pl, m in zip(prepared.layers, med,
                                                                     strict=True)}
    end()
    out()

    # ---- thread scaling ----------------------------------------------------------------------
    workloads = {
        "gemm": lambda t: (lambda: ck.xnor_gemm(a_words, w_words, threads=t)),
        "conv": conv_kernel,
        "cnn": lambda t: (lambda: ck.run(prepared, px, threads=t, intermediates=False)),
    }
    res["scaling"] = {}
    if 2 in threads_list:
        end = section("scaling", "thread scaling: the kernel at 1 thread vs 2 threads "
                      "(thread pool, and numba prange for comparison), interleaved")

        def with_prange(fn):
            def f():
                ck.PARALLEL = "prange"
                try:
                    fn()
                finally:
                    ck.PARALLEL = "pool"
            return f

        xp = xin.get_packed()
        lay = pconv.layer
        job_args = (xp, lay.kh, lay.kw, lay.stride, lay.pad, lay.conv_h, lay.conv_w, lay.in_c,
                    pconv.dense, pconv.w.shape[1], pconv.w, pconv.wt, pconv.blocked,
                    pconv.tile_px, 0, pconv.tsig, pconv.tval, np.empty((1, 1), np.int64), False,
                    np.empty((256, 4), np.uint64), np.empty((1, 1), np.uint8))
        ov = launch_overheads(job_args)
        res["scaling"]["launch_us"] = ov
        out(f"  launch overhead (median of 300, empty work): prange 16 iterations "
            f"{ov['prange_1t_us']:.1f} us at 1 thread, {ov['prange_2t_us']:.1f} us at 2; pool "
            f"16 tiles at 2 threads {ov['pool_2t_us']:.1f} us; a worker's dispatch of the conv "
            f"job {ov['join_dispatch_us']:.1f} us")
        for name, make in workloads.items():
            med, fastest, _ = interleave([local(make(1)), local(make(2)),
                                          local(with_prange(make(2)))], args.repeats)
            sp, spr = med[0] / med[1], med[0] / med[2]
            out(f"  {name:4s}: 1 thread {med[0] * 1e3:7.3f} ms   2 threads (pool) "
                f"{med[1] * 1e3:7.3f} ms = {sp:4.2f}x (goal >= {GOALS['scaling']}x: "
                f"{'met' if sp >= GOALS['scaling'] else 'MISSED'})   2 threads (prange) "
                f"{med[2] * 1e3:7.3f} ms = {spr:4.2f}x   [fastest samples: pool "
                f"{fastest[0] / fastest[1]:4.2f}x, prange {fastest[0] / fastest[2]:4.2f}x]")
            res["scaling"][name] = {"1t_s": med[0], "2t_pool_s": med[1], "2t_prange_s": med[2],
                                    "speedup_pool": sp, "speedup_prange": spr,
                                    "fastest_speedup_pool": fastest[0] / fastest[1],
                                    "fastest_speedup_prange": fastest[0] / fastest[2]}
        end()
        out()

    # ---- Larq Compute Engine -----------------------------------------------------------------
    res["lce"] = lce_section(args, out, section, threads_list, a_bits, w_bits, a_words, w_words,
                             a_f, w_f, conv, pconv, xbits, xin, xf, wf, prepared, px, net, xt,
                             rng)
    if res["lce"]:
        out()

    # ---- weight memory -----------------------------------------------------------------------
    out("## weight memory: packed (uint64, as the kernel keeps it) vs fp32")
    gemm_packed = w_words.nbytes
    out(f"  GEMM K=4096: fp32 {n * k * 4} B, packed {gemm_packed} B, "
        f"ratio {n * k * 4 / gemm_packed:.2f}x (K % 64 == 0)")
    conv_fp32 = conv.out_c * conv.k_valid * 4
    out(f"  conv 3x3x256 -> 256: fp32 {conv_fp32} B, packed {ck.weight_bytes(pconv)} B, "
        f"ratio {conv_fp32 / ck.weight_bytes(pconv):.2f}x")
    fp32 = sum(la.out_c * la.k_valid * 4 for la in model.layers)
    packed = ck.weight_bytes(prepared)
    out(f"  CNN: fp32 {fp32} B, packed {packed} B, ratio {fp32 / packed:.2f}x "
        "(layers with K % 64 != 0 pad their last word)")
    res["memory"] = {"gemm_ratio": n * k * 4 / gemm_packed, "cnn_fp32": fp32,
                     "cnn_packed": packed}
    out()
    summary(out, res, threads_list, batch, n, k, gemm_packed)
    load1 = os.getloadavg()
    loads.append(load1[0])
    out()
    out(f"load average    : {load_text(load1)} (at end; "
        f"{os.cpu_count()} logical CPUs shared with other users -> timings are noisy)")
    res["machine"]["load_end"] = load1
    peak_load = max(loads)
    res["loaded"] = peak_load > LOADED
    if res["loaded"]:
        out(f"LOADED RUN      : the 1-minute load average reached {peak_load:.2f} (> {LOADED}) "
            f"on {os.cpu_count()} CPUs during this run. Other processes took CPU time, so the "
            "2-thread figures and the thread scaling above say more about the other users "
            "than about the kernels; re-run on a quiet machine to judge those goals.")
    else:
        out(f"quiet run       : the 1-minute load average stayed at or below {peak_load:.2f} "
            f"(<= {LOADED}) during this run.")

    if args.save:
        dest = args.out
        for suffix, text in ((".txt", "\n".join(lines) + "\n"),
                             (".json", json.dumps(res, indent=2, default=float) + "\n")):
            files.write_text(dest.with_name(dest.name + suffix), text)
        print(f"wrote {dest}.txt and .json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
