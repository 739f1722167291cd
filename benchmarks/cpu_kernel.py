"""Benchmark the fast CPU kernel (xnorflow.sw.cpu_kernel) against fp32 PyTorch and NumPy.

Every ratio is measured side by side in this one process: the two sides run interleaved
(A, B, A, B, ...) with the same thread count (``torch.set_num_threads`` and
``numba.set_num_threads``), each sample is the median of several repetitions, JIT
compilation happens before any timing. The machine's load average is printed because the
machine may be shared.

    .venv/bin/python benchmarks/cpu_kernel.py            # print the report
    .venv/bin/python benchmarks/cpu_kernel.py --save     # also write benchmarks/results/
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
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from llvmlite import binding as llvm  # noqa: E402

from xnorflow.sw import cpu_kernel as ck  # noqa: E402
from xnorflow.sw import encoding as enc  # noqa: E402
from xnorflow.sw import golden, reference, synthetic  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
GOALS = {"gemm_1t": 10.0, "gemm_2t": 10.0, "conv": 6.0, "cnn": 5.0, "reference": 20.0}


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


BEST: dict[str, float] = {}
CPU: dict[str, float] = {}
FASTEST: dict[str, float] = {}


def side_by_side(fast, slow, repeats: int, key: str = "") -> tuple[float, float]:
    """Median wall seconds per call of ``fast`` and ``slow``, sampled interleaved.

    Two further views are kept under ``key``: the ratio of the best (minimum) wall samples
    (:data:`BEST`) and the ratio of median process CPU times (:data:`CPU`; meaningful at one
    thread only, where it is immune to the OS descheduling the process on a shared machine).
    The report's goals are judged on the wall-clock medians.
    """
    nf, ns = calibrate(fast), calibrate(slow)
    tf, ts, cf, cs = [], [], [], []
    for _ in range(repeats):
        tf.append(timed(fast, nf))
        cf.append(CPU_S[0])
        ts.append(timed(slow, ns))
        cs.append(CPU_S[0])
    if key:
        BEST[key] = min(ts) / min(tf)
        FASTEST[key] = min(tf)
        CPU[key] = statistics.median(cs) / max(statistics.median(cf), 1e-12)
    return statistics.median(tf), statistics.median(ts)


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15, help="interleaved samples per side")
    ap.add_argument("--save", action="store_true",
                    help="write benchmarks/results/cpu_kernel.txt and .json")
    args = ap.parse_args(argv)

    lines: list[str] = []
    res: dict = {"goals": GOALS}

    def out(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

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
    out(f"load average    : {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} (1/5/15 min, at start)")
    out(f"method          : interleaved samples, median of {args.repeats} per side; "
        "each sample averages enough calls for ~30 ms; goals judged on wall-clock medians")
    out("                  [best samples: ratio of the fastest samples; CPU time (1 thread "
        "only): ratio of median process CPU seconds, immune to descheduling]")
    res["machine"] = {"cpu": info["model"], "mhz": info["mhz"], "simd": simd,
                      "logical_cpus": os.cpu_count(), "load_start": load0,
                      "numba": numba.__version__, "torch": torch.__version__,
                      "llvm_cpu": llvm.get_host_cpu_name(), "unset_env": _UNSET_ENV}
    rng = np.random.default_rng(0)

    # ---- JIT warm-up (compilation or cache load, not timed) ----------------------------------
    t0 = time.perf_counter()
    model = synthetic.fashion_cnn(seed=0)
    prepared = ck.prepare(model)
    ck.run(prepared, rng.integers(0, 256, (2, 28, 28, 1), dtype=np.uint8))
    ck.xnor_gemm(np.zeros((4, 64), np.uint64), np.zeros((4, 64), np.uint64))
    out(f"JIT warm-up     : {time.perf_counter() - t0:.1f} s (compile or load cache; not timed)")
    out(f"numba threads   : layer in use {numba.threading_layer()!r} (sw/cpu_kernel.py picks "
        "workqueue unless NUMBA_THREADING_LAYER is set), tiles scheduled dynamically")
    out()

    # ---- GEMM -------------------------------------------------------------------------------
    m = n = 256
    k = 4096
    a_bits = rng.integers(0, 2, (m, k), dtype=np.uint8)
    w_bits = rng.integers(0, 2, (n, k), dtype=np.uint8)
    a_words = enc.pack_bits(a_bits, 64, enc.ACT_PAD_BIT)
    w_words = enc.pack_bits(w_bits, 64, enc.WEIGHT_PAD_BIT)
    assert np.array_equal(ck.xnor_gemm(a_words, w_words), reference.xnor_gemm(a_words, w_words))
    a_f = torch.from_numpy(enc.bits_to_values(a_bits).astype(np.float32))
    w_f = torch.from_numpy(enc.bits_to_values(w_bits).T.astype(np.float32)).contiguous()
    macs = m * n * k
    out(f"## GEMM M=N={m}, K={k} bits: xnor_gemm (packed uint64) vs torch.matmul fp32")
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

    # ---- reference kernel --------------------------------------------------------------------
    set_threads(1)
    tk, tr = side_by_side(lambda: ck.xnor_gemm(a_words, w_words),
                          lambda: reference.xnor_gemm(a_words, w_words), max(3, args.repeats // 3),
                          "reference")
    ratio = tr / tk
    out("## same GEMM vs the NumPy reference kernel (sw/reference.py), 1 thread")
    out(f"  kernel {tk * 1e3:8.3f} ms   reference {tr * 1e3:8.3f} ms   ratio {ratio:6.1f}x  "
        f"(goal >= {GOALS['reference']:.0f}x: "
        f"{'met' if ratio >= GOALS['reference'] else 'MISSED'}) {best('reference')}")
    res["reference"] = {"kernel_s": tk, "reference_s": tr, "ratio": ratio,
                        "best_sample_ratio": BEST["reference"], "cpu_time_ratio": CPU["reference"]}

    # ---- peak --------------------------------------------------------------------------------
    mhz = info["mhz"] or 0.0
    if "avx512_vpopcntdq" in flags:
        peak, why = 512, ("AVX-512 VPOPCNTDQ: one 512-bit VPOPCNTQ per cycle per core "
                          "(the XOR, add and loads each popcount needs are not counted)")
    elif "avx2" in flags:
        peak, why = 64, ("AVX2 has no vector popcount: ~1 scalar POPCNT (64 bits) per cycle "
                         "(a vpshufb nibble-LUT can do somewhat better)")
    else:
        peak, why = 64, "scalar POPCNT, 64 bits per cycle"
    gk = res["gemm"]["gemm_1t"]["kernel_s"]
    achieved = macs / gk / (mhz * 1e6) if mhz else float("nan")
    out(f"## binary MACs per cycle per core (GEMM, 1 thread, clock {mhz:.0f} MHz from cpuinfo)")
    fastest = macs / FASTEST["gemm_1t"] / (mhz * 1e6) if mhz else float("nan")
    out(f"  achieved {achieved:6.1f} MAC/cycle (median sample; fastest sample {fastest:.1f}) vs "
        f"assumed peak {peak} MAC/cycle = {100 * achieved / peak:5.1f}% of peak "
        f"({100 * fastest / peak:.1f}% in the fastest sample)")
    out(f"  peak assumption: {why}")
    if 2 in threads_list:
        g2 = res["gemm"]["gemm_2t"]["kernel_s"]
        out(f"  2 threads: {macs / g2 / (mhz * 1e6) / 2 if mhz else float('nan'):6.1f} "
            "MAC/cycle per core")
    res["peak"] = {"achieved_mac_per_cycle_1t": achieved, "fastest_sample": fastest,
                   "assumed_peak": peak, "assumption": why}
    out()

    # ---- convolution -------------------------------------------------------------------------
    conv = synthetic.random_layer(rng, name="conv3x3", kind="conv", in_shape=(16, 16, 256),
                           out_c=256, k=3, pad=1)
    pconv = ck.prepare_layer(conv)
    xbits = rng.integers(0, 2, (1, 16, 16, 256), dtype=np.uint8)
    xin = ck._Act(1, packed=enc.pack_bits(xbits, 64).astype(np.uint64)[None], channels=256)
    got, _ = ck._forward(pconv, xin, keep_acc=False)
    assert np.array_equal(got.get_levels(), golden.output_stage(
        conv, golden.layer_accumulators(conv, xbits)))
    xf = torch.from_numpy(enc.bits_to_values(xbits).astype(np.float32)).permute(0, 3, 1, 2)
    xf = xf.contiguous()
    wf = torch.from_numpy(enc.bits_to_values(conv.weights).astype(np.float32))
    wf = wf.permute(0, 3, 1, 2).contiguous()
    out("## conv 3x3, 256 -> 256 channels, 16x16 map, pad 1, batch 1: packed in -> "
        "threshold -> packed out vs F.conv2d fp32")
    res["conv"] = {}
    for t in threads_list:
        set_threads(t)
        tk, tt = side_by_side(lambda: ck._forward(pconv, xin, keep_acc=False),
                              lambda: F.conv2d(xf, wf, padding=1), args.repeats, f"conv_{t}t")
        ratio = tt / tk
        out(f"  {t} thread(s): kernel {tk * 1e3:8.3f} ms   torch {tt * 1e3:8.3f} ms   "
            f"ratio {ratio:6.1f}x  (goal >= {GOALS['conv']:.0f}x: "
            f"{'met' if ratio >= GOALS['conv'] else 'MISSED'}) {best(f'conv_{t}t')}")
        res["conv"][f"{t}t"] = {"kernel_s": tk, "torch_s": tt, "ratio": ratio,
                                "best_sample_ratio": BEST[f"conv_{t}t"],
                                "cpu_time_ratio": CPU[f"conv_{t}t"]}
    out()

    # ---- whole CNN ---------------------------------------------------------------------------
    batch = 256
    px = rng.integers(0, 256, (batch, 28, 28, 1), dtype=np.uint8)
    net = torch_cnn()
    xt = torch.from_numpy(px.astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()
    paths = ", ".join(f"{p.layer.name}:{p.path}{'/dense' if p.dense else ''}"
                      f"/Kw={p.kwords}{'/4x4' if p.blocked else '/rows'}"
                      for p in prepared.layers)
    out(f"## Fashion-MNIST-shaped CNN, batch {batch}: run(intermediates=False) vs the same "
        "network in fp32 torch (inference_mode)")
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
    out(f"GEMM: {achieved:.0f} binary MACs/cycle/core at 1 thread = {100 * achieved / peak:.0f}% "
        f"of the assumed {peak}/cycle peak; CNN: {res['cnn']['1t']['kernel_images_per_s']:.0f} "
        "images/s at 1 thread.")
    load1 = os.getloadavg()
    out()
    out(f"load average    : {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} (at end; "
        f"{os.cpu_count()} logical CPUs shared with other users -> timings are noisy)")
    res["machine"]["load_end"] = load1

    if args.save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        for name, text in (("cpu_kernel.txt", "\n".join(lines) + "\n"),
                           ("cpu_kernel.json", json.dumps(res, indent=2, default=float) + "\n")):
            fd, tmp = tempfile.mkstemp(dir=RESULTS, prefix=f".{name}.")
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, RESULTS / name)
        print(f"wrote {RESULTS / 'cpu_kernel.txt'} and .json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
