"""Verilog generation from the Amaranth design, cached by a hash of parameters and sources.

:func:`generate` turns any ``wiring.Component`` into one Verilog file through
``amaranth.back.verilog`` (the builtin yosys); :func:`accelerator_verilog` does it for the
:class:`~xnorflow.hw.accelerator.Accelerator` on a given target. Generating the accelerator
takes seconds, compiling it for Verilator about a minute, so both are cached:

* the key is a SHA-256 over the caller's parameters (target geometry, memory capacities,
  memory images when they are baked in), the Amaranth version and the bytes of every source
  file under ``hw/`` and ``sw/`` -- any edit to the gateware or the contract invalidates it;
* the cache lives in ``$XNORFLOW_CACHE_DIR`` (default ``~/.cache/xnorflow``), under
  ``rtl/<name>-<key>/<name>.v``, written atomically (:mod:`xnorflow.sw.files`) so concurrent
  test workers never see half a file;
* the key hashes the files on disk, but ``build`` runs the modules this process imported: a
  long-running process (a benchmark, a test session) that imported ``hw/``/``sw/`` modules
  before someone edited them would store its old design under the new sources' key, and
  every later process would simulate that stale Verilog. So when a loaded ``hw/``/``sw/``
  module's file changed after this process started (:func:`stale_modules`), or the sources
  change while building, the Verilog goes to a folder private to this process instead
  (``rtl/<name>-<key>-p<pid>-<start>/``), never to the shared one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xnorflow.sw import files

#: Folders whose sources are part of every cache key (the gateware and the contract/IR).
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("hw", "sw")
#: Top-level module name of generated Verilog (the cocotb ``hdl_toplevel``).
TOPLEVEL = "top"


def cache_dir() -> Path:
    """The root of xnorflow's build cache: ``$XNORFLOW_CACHE_DIR`` or ``~/.cache/xnorflow``."""
    env = os.environ.get("XNORFLOW_CACHE_DIR")
    root = Path(env) if env else Path.home() / ".cache" / "xnorflow"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _source_files() -> list[Path]:
    here = PACKAGE_ROOT
    files: list[Path] = []
    for d in SOURCE_DIRS:
        folder = here / d
        if folder.is_dir():
            files += sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)
    return files


def sources_digest() -> str:
    """SHA-256 over the relative path and bytes of every ``hw/`` and ``sw/`` source file."""
    h = hashlib.sha256()
    for p in _source_files():
        h.update(str(p.relative_to(PACKAGE_ROOT)).encode())
        h.update(b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


#: Fallback start time where ``/proc`` cannot tell when this process started.
_IMPORTED_AT = time.time()


def _process_start() -> float:
    """Wall-clock time this process started (Linux ``/proc``; elsewhere, when this module was
    imported), rounded down by a second of slack."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22, starttime, in clock ticks after boot
        btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK") - 1.0
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED_AT - 1.0


def stale_modules() -> list[str]:
    """Loaded ``hw/``/``sw/`` modules whose source file changed after this process started.

    Such a module may hold older code than its file (it was imported before the edit), so
    what this process builds need not match :func:`sources_digest` (conservative: a module
    imported after the edit is listed too).
    """
    start = _process_start()
    files = {p.resolve() for p in _source_files()}
    out = []
    # copy() clones the dict in one step; iterating sys.modules can meet an import made by a
    # finalizer (garbage collection) and raise "dictionary changed size during iteration"
    for name, mod in sys.modules.copy().items():
        f = getattr(mod, "__file__", None)
        if not f:
            continue
        p = Path(f).resolve()
        try:
            if p in files and p.stat().st_mtime > start:
                out.append(name)
        except OSError:
            out.append(name)
    return sorted(out)


def cache_key(params: dict[str, Any]) -> str:
    """Short hex key of ``params`` (JSON-serialisable), the Amaranth version and the sources."""
    import amaranth

    doc = json.dumps(params, sort_keys=True, default=str)
    h = hashlib.sha256()
    h.update(doc.encode())
    h.update(amaranth.__version__.encode())
    h.update(sources_digest().encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class GeneratedRTL:
    """One generated Verilog file: ``path``, its ``toplevel`` module and its cache ``key``."""

    path: Path
    toplevel: str
    key: str
    cached: bool

    @property
    def folder(self) -> Path:
        return self.path.parent


def generate(
    name: str,
    build: Callable[[], Any],
    params: dict[str, Any],
    *,
    toplevel: str = TOPLEVEL,
    root: Path | None = None,
) -> GeneratedRTL:
    """Verilog of the component ``build()`` returns, cached under ``name`` and ``params``.

    ``build`` is only called on a cache miss. ``params`` must describe everything that changes
    the design besides the ``hw/``/``sw/`` sources (which are always hashed). A design built
    from loaded modules older than their files is kept private to this process
    (:func:`stale_modules`). The file's ports are the component's signature flattened by
    Amaranth (``host_in__valid``, ...) plus ``clk`` and ``rst``.
    """
    from amaranth.back import verilog

    key_params = {"name": name, "toplevel": toplevel, **params}
    key = cache_key(key_params)
    base = (root or cache_dir()) / "rtl"
    # a process with stale modules keeps its own design, private (see the module docstring)
    private = base / f"{name}-{key}-p{os.getpid()}-{int(_process_start())}"
    folder = private if stale_modules() else base / f"{name}-{key}"
    path = folder / f"{name}.v"
    if path.is_file():
        return GeneratedRTL(path, toplevel, key, cached=True)
    component = build()
    text = verilog.convert(component, name=toplevel, emit_src=False)
    stale = stale_modules()  # build() may have imported more
    if folder != private and (stale or cache_key(key_params) != key):
        folder = private
    if folder == private:
        params = {**params, "private_because": stale or "sources changed while building"}
    path = folder / f"{name}.v"
    files.write_text(path, text)
    files.write_text(folder / "params.json", json.dumps(params, indent=2, default=str))
    return GeneratedRTL(path, toplevel, key, cached=False)


def target_params(target: Any) -> dict[str, Any]:
    """The parameters of a ``Target`` that shape the gateware, for the generated Verilog's
    cache key: every field but the description (geometry, memories, board, accumulator
    width, pipelining), so a field added to ``Target`` joins the key by itself (a key that
    listed fields by hand once lacked the pipelining and shared one Verilog between
    targets that differ there)."""
    params = {f.name: getattr(target, f.name) for f in dataclasses.fields(target)
              if f.name != "description"}
    params["memories"] = {k: list(v) for k, v in sorted(dict(target.memories).items())}
    return params


#: Memories that :func:`sizing_images` sizes with all-zero images (the host loads them).
SIZED_MEMORIES = ("weights", "thresholds", "activations")


def needed_depths(target: Any, models_memories: list) -> dict[str, int]:
    """Depths the accelerator needs to hold every model in ``models_memories``.

    ``models_memories`` is a list of memory-image lists (one per model folder); the result is
    :func:`~xnorflow.hw.memories.memory_depths` maximised over them.
    """
    from xnorflow.hw.memories import memory_depths

    depths = memory_depths(target, [])
    for mems in models_memories:
        for k, v in memory_depths(target, list(mems)).items():
            depths[k] = max(depths[k], v)
    return depths


def sizing_images(target: Any, depths: dict[str, int] | None) -> list | None:
    """All-zero images that make ``Accelerator(target, images)`` have ``depths``.

    Only unlimited (``None``) capacities of the target depend on images; for a target whose
    memories all have fixed sizes this returns ``None``. The contents are zero: every model
    is loaded through the host link, so one Verilog file serves every model that fits.
    ``program`` and ``scores`` keep the default depths (``hw.memories.DEFAULT_DEPTHS``); a
    model needing more is refused.
    """
    import numpy as np

    from xnorflow.hw.memories import DEFAULT_DEPTHS
    from xnorflow.sw.images import MemoryImage

    if depths is None or all(target.depth(n) is not None for n in SIZED_MEMORIES):
        return None
    for name in ("program", "scores"):
        if target.depth(name) is None and depths.get(name, 0) > DEFAULT_DEPTHS[name]:
            raise ValueError(f"memory {name!r} needs {depths[name]} words, more than the "
                             f"{DEFAULT_DEPTHS[name]} an image-less accelerator has")
    images = []
    for name in SIZED_MEMORIES:
        if target.depth(name) is None:
            width = target.word_bits(name)
            words = np.zeros(depths[name], dtype=np.uint64 if width <= 64 else object)
            if width > 64:
                words[:] = 0
            images.append(MemoryImage(name, width, words, "zeros (sizing only)"))
    return images


def accelerator_for(target: Any, models_memories: list):
    """``Accelerator(target, sizing images)`` big enough for every model given."""
    from xnorflow.hw.accelerator import Accelerator

    return Accelerator(target, sizing_images(target, needed_depths(target, models_memories)))


def accelerator_verilog(
    target: Any, models_memories: list | None = None, *, root: Path | None = None
) -> GeneratedRTL:
    """Verilog of the ``Accelerator`` for ``target`` (cached; see the module docstring).

    ``target`` is a :class:`xnorflow.sw.targets.Target` or a target name. The memories start
    at zero and every model is loaded through the host link, so one Verilog file (and one
    Verilator build) serves every model that fits; for targets with unlimited memories
    ``models_memories`` (a list of per-model image lists) sizes them
    (:func:`sizing_images`) and only the resulting depths enter the cache key.
    """
    from xnorflow.sw.targets import get_target

    if isinstance(target, str):
        target = get_target(target)
    depths = needed_depths(target, models_memories or [])
    sizing = sizing_images(target, depths)
    params = target_params(target)
    params["depths"] = depths if sizing is not None else None

    def build():
        from xnorflow.hw.accelerator import Accelerator

        return Accelerator(target, sizing)

    return generate(f"accel_{target.geometry}", build, params, root=root)
