"""Larq Compute Engine's interpreter as a worker process of benchmarks/peers.py.

Runs inside ``.peers/lce-run`` (numpy < 2, flatbuffers, larq-compute-engine --no-deps;
``scripts/setup_peers.sh``). It imports LCE's ``interpreter_wrapper_lite`` extension directly:
the package's ``__init__`` imports TensorFlow, which this small venv does not have.

Protocol: one JSON object per line on stdin, one JSON answer per line on stdout.
    {"cmd": "versions"}
    {"cmd": "load", "key": K, "path": P, "threads": T, "indirect_bgemm": true}
    {"cmd": "input", "key": K, "npy": F}            input array for model K (float32)
    {"cmd": "time", "key": K, "inner": N}           N predict() calls: wall and CPU s/call
    {"cmd": "output", "key": K, "npy": F}           one predict(), output saved to F
    {"cmd": "quit"}
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np


def _wrapper():
    spec = importlib.util.find_spec("larq_compute_engine")
    root = Path(spec.submodule_search_locations[0]) / "tflite" / "python"
    so = next(root.glob("interpreter_wrapper_lite*.so"))
    loader = importlib.machinery.ExtensionFileLoader("interpreter_wrapper_lite", str(so))
    mod_spec = importlib.util.spec_from_file_location("interpreter_wrapper_lite", so,
                                                      loader=loader)
    mod = importlib.util.module_from_spec(mod_spec)
    loader.exec_module(mod)
    return mod


def main() -> int:
    lite = _wrapper()
    models: dict = {}
    inputs: dict = {}
    for line in sys.stdin:
        req = json.loads(line)
        cmd = req["cmd"]
        try:
            if cmd == "quit":
                return 0
            if cmd == "versions":
                ans = {"larq-compute-engine": importlib.metadata.version("larq-compute-engine"),
                       "numpy": np.__version__, "python": sys.version.split()[0]}
            elif cmd == "load":
                flat = Path(req["path"]).read_bytes()
                it = lite.LiteInterpreter(flat, int(req["threads"]), False,
                                          bool(req.get("indirect_bgemm", True)), False)
                models[req["key"]] = it
                ans = {"input_shapes": [list(s) for s in it.input_shapes],
                       "output_shapes": [list(s) for s in it.output_shapes]}
            elif cmd == "input":
                inputs[req["key"]] = [np.ascontiguousarray(np.load(req["npy"]), np.float32)]
                ans = {}
            elif cmd == "time":
                it, x, n = models[req["key"]], inputs[req["key"]], int(req["inner"])
                c0 = time.process_time()
                t0 = time.perf_counter()
                for _ in range(n):
                    it.predict(x)
                ans = {"wall_s": (time.perf_counter() - t0) / n,
                       "cpu_s": (time.process_time() - c0) / n}
            elif cmd == "output":
                out = models[req["key"]].predict(inputs[req["key"]])
                np.save(req["npy"], np.asarray(out[0]))
                ans = {"shape": list(np.shape(out[0]))}
            else:
                ans = {"error": f"unknown command {cmd!r}"}
        except Exception as e:  # report to the parent, keep serving
            ans = {"error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(ans) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
