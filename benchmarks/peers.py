"""Peer CPU engines for benchmarks/cpu_kernel.py: Larq Compute Engine (LCE) 0.16.0.

LCE lives in its own virtual environments (``scripts/setup_peers.sh``, git-ignored ``.peers/``):
its converter needs TensorFlow 2.15 and numpy < 2, xnorflow needs numpy 2. This module, in
xnorflow's venv, writes each model's binary weights to an ``.npz``, has
``benchmarks/lce_convert.py`` (converter venv) turn them into ``.tflite`` files once (cached
in ``.peers/models/`` under a hash of the spec, the weights and the converter script), and
drives LCE's interpreter in a worker process (``benchmarks/lce_worker.py``, interpreter venv)
so that its samples can be interleaved with the kernel's and torch's.

Nothing here is needed by xnorflow or its default tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from xnorflow.sw import files

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
SETUP = ROOT / "scripts" / "setup_peers.sh"
DEFAULT_DIR = ROOT / ".peers"


class PeerError(RuntimeError):
    """A peer could not be set up or run; the message says what to do."""


def ready(peers_dir: Path) -> tuple[bool, str]:
    """Whether ``scripts/setup_peers.sh`` has set LCE up in ``peers_dir`` (and its message)."""
    r = subprocess.run(["bash", str(SETUP), "--check", "--dir", str(peers_dir)],
                       capture_output=True, text=True)
    return r.returncode == 0, (r.stdout + r.stderr).strip()


class LCE:
    """LCE's converter (once per model, cached) and its interpreter in a worker process."""

    def __init__(self, peers_dir: Path = DEFAULT_DIR):
        self.dir = Path(peers_dir)
        self.models = self.dir / "models"
        self.models.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.tmp = tempfile.TemporaryDirectory(prefix="xnorflow-lce-")
        self.ops: dict[str, list[str]] = {}
        self.converted: list[str] = []

    # -- models ----------------------------------------------------------------------------
    def models_for(self, specs: list[dict]) -> dict[str, Path]:
        """Convert (or find cached) ``.tflite`` files: ``{name: path}``.

        Each spec is ``{"name", "kind", ...}`` with ``"weights": {array name: ndarray}``.
        """
        todo, paths = [], {}
        script = (HERE / "lce_convert.py").read_bytes()
        for spec in specs:
            weights = spec["weights"]
            h = hashlib.sha256(script)
            h.update(json.dumps({k: v for k, v in spec.items() if k != "weights"},
                                sort_keys=True).encode())
            for k in sorted(weights):
                h.update(k.encode())
                h.update(np.ascontiguousarray(weights[k], np.float32).tobytes())
            stem = self.models / f"{spec['name']}-{h.hexdigest()[:16]}"
            out = stem.with_suffix(".tflite")
            paths[spec["name"]] = out
            if not out.exists():
                npz = stem.with_suffix(".npz")
                with files.atomic_file(npz, suffix=".npz") as tmp:
                    np.savez(tmp, **{k: np.asarray(v, np.float32) for k, v in weights.items()})
                todo.append({**{k: v for k, v in spec.items() if k != "weights"},
                             "weights": str(npz), "out": str(out)})
        if todo:
            spec_file = Path(self.tmp.name) / "spec.json"
            spec_file.write_text(json.dumps(todo))
            py = self.dir / "lce-convert" / "bin" / "python"
            r = subprocess.run([str(py), str(HERE / "lce_convert.py"), str(spec_file)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise PeerError("LCE conversion failed:\n" + r.stderr[-3000:])
            for t in todo:
                Path(t["weights"]).unlink(missing_ok=True)
            self.converted = [t["name"] for t in todo]
        for name, p in paths.items():
            self.ops[name] = json.loads(Path(str(p) + ".ops.json").read_text())["ops"]
        return paths

    # -- worker ----------------------------------------------------------------------------
    def start(self) -> None:
        py = self.dir / "lce-run" / "bin" / "python"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
        # the worker's own CPU time only: no BLAS threads or TF in that venv
        self.proc = subprocess.Popen([str(py), str(HERE / "lce_worker.py")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)

    def ask(self, **req) -> dict:
        if self.proc is None:
            self.start()
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise PeerError(f"LCE worker exited (code {self.proc.poll()}) on {req['cmd']}")
        ans = json.loads(line)
        if "error" in ans:
            raise PeerError(f"LCE worker: {ans['error']} (request {req['cmd']})")
        return ans

    def load(self, key: str, path: Path, threads: int, x: np.ndarray) -> dict:
        """Load ``path`` with ``threads`` threads (indirect BGEMM on) and set its input."""
        ans = self.ask(cmd="load", key=key, path=str(path), threads=threads, indirect_bgemm=True)
        f = Path(self.tmp.name) / f"{key}.in.npy"
        np.save(f, np.ascontiguousarray(x, np.float32))
        self.ask(cmd="input", key=key, npy=str(f))
        return ans

    def time(self, key: str, inner: int) -> tuple[float, float]:
        ans = self.ask(cmd="time", key=key, inner=inner)
        return ans["wall_s"], ans["cpu_s"]

    def output(self, key: str) -> np.ndarray:
        f = Path(self.tmp.name) / f"{key}.out.npy"
        self.ask(cmd="output", key=key, npy=str(f))
        return np.load(f)

    def versions(self) -> dict:
        return self.ask(cmd="versions")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
            except (BrokenPipeError, ValueError):
                pass
            self.proc.wait(timeout=30)
        self.proc = None
        self.tmp.cleanup()
