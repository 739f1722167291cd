"""Memory images, format v1: the accelerator's only input besides the image data.

See ``docs/memory-images.md``. A compiled model folder holds, per memory, a
``$readmemh``-style hex file and the same words as raw little-endian binary, plus one JSON
manifest (format version, target geometry, per memory: name, depth, width, layout, sha256).

Writing (:func:`write_model_folder`) builds the whole folder in a temporary directory next to
the destination and renames it into place, so a failed compile never leaves a half-written
folder and an existing folder is only replaced when asked to (``force``). Loading
(:func:`load_model_folder`) checks the format version, the target (name, geometry, memory
capacities), every file's size and sha256, the hex syntax, that hex and bin hold the same
words, and depth/width; anything wrong raises :class:`ImageError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .errors import UserError
from .files import atomic_folder, check_can_create, existing_folder_only
from .ir import CompiledModel

FORMAT_VERSION = 1

#: ``format`` field of every manifest: says what kind of JSON file this is.
FORMAT_NAME = "xnorflow-memory-images"
MANIFEST = "manifest.json"
#: Files of the IR (:meth:`CompiledModel.save`) inside a model folder.
IR_FILES = ("model.json", "model.npz")
#: Memory names become file names: lower-case letters, digits, ``_`` and ``-`` only.
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_HEX_RE = re.compile(r"^[0-9a-f]+$")


class ImageError(UserError):
    """A model folder or memory image that is damaged, mismatched or of another version."""


@dataclass
class MemoryImage:
    """The initial contents of one accelerator memory.

    ``words`` holds ``depth`` unsigned words of ``width`` bits each (a ``uint64`` array when
    ``width <= 64``, else an object array of Python ints); ``layout`` says in words how the
    contents are arranged (it is copied into the manifest).
    """

    name: str
    width: int
    words: np.ndarray
    layout: str

    @property
    def depth(self) -> int:
        return len(self.words)


class LoadedFolder(NamedTuple):
    """What :func:`load_model_folder` returns (unpacks as ``manifest, model, memories``)."""

    manifest: dict
    model: CompiledModel
    memories: list[MemoryImage]


# ----- word encodings --------------------------------------------------------------------
def hex_digits(width: int) -> int:
    """Hex digits per line of a ``width``-bit memory: ``ceil(width / 4)``."""
    return -(-width // 4)


def bytes_per_word(width: int) -> int:
    """Bytes per word in the ``.bin`` file of a ``width``-bit memory: ``ceil(width / 8)``."""
    return -(-width // 8)


def _as_ints(image: MemoryImage) -> list[int]:
    return [int(w) for w in np.asarray(image.words).reshape(-1)]


def _check_image(image: MemoryImage) -> list[int]:
    """Return the words of ``image`` as Python ints, checking name, width and range."""
    if not _NAME_RE.match(image.name):
        raise ValueError(
            f"memory name {image.name!r} is not a safe file name (use [a-z0-9_-], "
            "starting with a letter or digit)"
        )
    if int(image.width) != image.width or image.width < 1:
        raise ValueError(f"memory {image.name!r}: width must be a positive integer")
    words = _as_ints(image)
    limit = 1 << image.width
    for i, w in enumerate(words):
        if not 0 <= w < limit:
            raise ValueError(
                f"memory {image.name!r}: word {i} = {w:#x} does not fit {image.width} bits"
            )
    return words


def hex_text(image: MemoryImage) -> str:
    """The ``$readmemh`` text of ``image``: one word per line, ``ceil(width/4)`` lower-case
    hex digits, no address records or comments, ``\\n`` after every line."""
    d = hex_digits(image.width)
    return "".join(f"{w:0{d}x}\n" for w in _check_image(image))


def bin_bytes(image: MemoryImage) -> bytes:
    """The raw binary of ``image``: each word little-endian in ``ceil(width/8)`` bytes."""
    nb = bytes_per_word(image.width)
    words = _check_image(image)
    if image.width <= 64:
        arr = np.asarray(words, dtype="<u8").reshape(-1, 1).view(np.uint8)
        return arr.reshape(-1, 8)[:, :nb].tobytes()
    return b"".join(w.to_bytes(nb, "little") for w in words)


def parse_hex(text: str, width: int, depth: int, path: str | Path = "<hex>") -> list[int]:
    """Parse a hex file written by :func:`hex_text` strictly; errors name ``path``."""
    d = hex_digits(width)
    if text and not text.endswith("\n"):
        raise ImageError(f"{path}: last line has no newline; file truncated?")
    lines = text.split("\n")[:-1] if text else []
    if len(lines) != depth:
        raise ImageError(f"{path}: {len(lines)} lines, the manifest says depth {depth}")
    limit = 1 << width
    words = []
    for i, line in enumerate(lines):
        if len(line) != d or not _HEX_RE.match(line):
            raise ImageError(
                f"{path}: line {i + 1} is {line[:40]!r}, expected {d} lower-case hex digits"
            )
        w = int(line, 16)
        if w >= limit:
            raise ImageError(f"{path}: line {i + 1} = {line} does not fit {width} bits")
        words.append(w)
    return words


def parse_bin(data: bytes, width: int, depth: int, path: str | Path = "<bin>") -> list[int]:
    """Parse a bin file written by :func:`bin_bytes`; :class:`ImageError` names ``path``."""
    nb = bytes_per_word(width)
    if len(data) != depth * nb:
        raise ImageError(
            f"{path}: {len(data)} bytes, expected depth {depth} x {nb} bytes = {depth * nb}"
        )
    limit = 1 << width
    words = [int.from_bytes(data[i * nb : (i + 1) * nb], "little") for i in range(depth)]
    for i, w in enumerate(words):
        if w >= limit:
            raise ImageError(f"{path}: word {i} = {w:#x} has bits set above bit {width - 1}")
    return words


def _words_array(words: list[int], width: int) -> np.ndarray:
    if width <= 64:
        return np.asarray(words, dtype=np.uint64)
    arr = np.empty(len(words), dtype=object)
    arr[:] = words
    return arr


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----- targets in the manifest -----------------------------------------------------------
def target_record(target: Any) -> dict:
    """The manifest's ``target`` object for a :class:`~xnorflow.sw.targets.Target`."""
    mems = {}
    for name, spec in sorted(dict(target.memories).items()):
        width, depth = spec
        mems[name] = {"width": int(width), "depth": None if depth is None else int(depth)}
    rec = {
        "name": target.name,
        "rows": int(target.rows),
        "cols": int(target.cols),
        "width": int(target.width),
        "geometry": f"{target.rows}x{target.cols}x{target.width}",
        "memories": mems,
    }
    rec["acc_bits"] = int(target.acc_bits)
    rec["popcount_levels"] = int(target.popcount_levels)  # timing only: not checked
    rec["mem_regs"] = int(target.mem_regs)  # timing only: not checked
    rec["weight_rows"] = int(target.weight_rows)  # the weights' word width shows it too
    if target.board:
        rec["board"] = str(target.board)
    return rec


def target_from_record(rec: dict, where: str | Path = MANIFEST) -> Any:
    """Rebuild a :class:`~xnorflow.sw.targets.Target` from a manifest's ``target`` object."""
    from .targets import Target

    try:
        mems = {n: (m["width"], m["depth"]) for n, m in rec["memories"].items()}
        kw = {k: rec[k] for k in ("acc_bits", "popcount_levels", "mem_regs", "weight_rows")
              if k in rec}
        return Target(rec["name"], rec["rows"], rec["cols"], rec["width"], memories=mems,
                      board=rec.get("board"), **kw)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ImageError(f"{where}: invalid target record ({e})") from None


def _check_target(manifest_path: Path, recorded: dict, target: Any) -> None:
    """Refuse a folder compiled for another target, or for an older definition of it."""
    got = recorded.get("name")
    want = target_record(target)
    if got != target.name:
        raise ImageError(
            f"{manifest_path}: compiled for target {got!r} ({recorded.get('geometry')}), not "
            f"{target.name!r} ({want['geometry']}); recompile with --target {target.name}"
        )
    for key in ("rows", "cols", "width", "acc_bits", "memories"):
        if recorded.get(key) != want[key]:
            raise ImageError(
                f"{manifest_path}: target {got!r} had {key} = {recorded.get(key)!r} when this "
                f"folder was compiled, but it is now {want[key]!r}; recompile it"
            )


def _check_fits_record(path: Path, name: str, width: int, depth: int, recorded: dict) -> None:
    mems = recorded.get("memories") or {}
    if name not in mems:
        return
    cap = mems[name]
    if cap.get("width") != width:
        raise ImageError(
            f"{path}: memory {name!r} is {width} bits wide but target "
            f"{recorded.get('name')!r} has {cap.get('width')}-bit {name!r}"
        )
    if cap.get("depth") is not None and depth > cap["depth"]:
        raise ImageError(
            f"{path}: memory {name!r} holds {depth} words but target "
            f"{recorded.get('name')!r} has room for {cap['depth']}"
        )


# ----- destinations ----------------------------------------------------------------------
def _is_replaceable(folder: Path) -> bool:
    """A folder ``--force`` may replace: empty, or a model folder (has a manifest)."""
    return folder.is_dir() and ((folder / MANIFEST).is_file() or not any(folder.iterdir()))


def check_destination(out_dir: str | Path, force: bool = False) -> Path:
    """Raise :class:`UserError` if ``out_dir`` may not be written (call before long work)."""
    out = Path(out_dir)
    if out.exists() or out.is_symlink():
        if out.is_symlink() or not out.is_dir():
            raise UserError(f"{out}: exists and is not a folder; choose another -o")
        if not _is_replaceable(out):
            raise UserError(
                f"{out}: exists and is not a compiled model folder (no {MANIFEST}); "
                "refusing to replace it even with --force: choose another -o"
            )
        if not force:
            raise UserError(f"{out}: already exists; pass --force to replace it")
        existing_folder_only(out)  # a mount point cannot be replaced
    check_can_create(out)  # a read-only or full disk, before the work
    return out


# ----- writing ---------------------------------------------------------------------------
def _file_record(path: Path) -> dict:
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def write_model_folder(
    out_dir: str | Path,
    model: CompiledModel,
    target: Any,
    memories: list[MemoryImage],
    extra_files: Mapping[str, str | bytes] | None = None,
    force: bool = False,
    size: dict | None = None,
) -> dict:
    """Write a compiled model folder atomically and return its manifest.

    The folder holds ``<memory>.hex`` and ``<memory>.bin`` per memory, the IR
    (``model.json``, ``model.npz``), the size report (``size.json``, ``size.md``; computed with
    :func:`xnorflow.sw.size.size_report` unless ``size`` is given), any ``extra_files``
    (name -> text or bytes; all listed with their sha256) and ``manifest.json``.
    """
    from .size import format_size_markdown, size_report

    names = [m.name for m in memories]
    if len(set(names)) != len(names):
        raise ValueError(f"memory names must be unique, got {names}")
    reserved = {MANIFEST, *IR_FILES, "size.json", "size.md"}
    reserved |= {f"{n}.{ext}" for n in names for ext in ("hex", "bin")}
    extra_files = dict(extra_files or {})
    for fname in extra_files:
        if fname in reserved or "/" in fname or fname.startswith("."):
            raise ValueError(f"extra file name {fname!r} is reserved or not a plain file name")
    trec = target_record(target)
    for m in memories:
        try:
            _check_fits_record(Path(f"{m.name}.hex"), m.name, int(m.width), m.depth, trec)
        except ImageError as e:
            raise ValueError(
                f"memory images do not fit their target (call check_fits first): {e}"
            ) from None
    if size is None:
        size = size_report(model, memories, target)

    with atomic_folder(out_dir, lambda out: check_destination(out, force)) as tmp:
        mem_records = []
        for m in memories:
            hpath, bpath = tmp / f"{m.name}.hex", tmp / f"{m.name}.bin"
            hpath.write_text(hex_text(m), newline="\n")
            bpath.write_bytes(bin_bytes(m))
            mem_records.append(
                {
                    "name": m.name,
                    "depth": m.depth,
                    "width": int(m.width),
                    "layout": m.layout,
                    "hex": _file_record(hpath),
                    "bin": _file_record(bpath),
                }
            )
        model.save(tmp)
        (tmp / "size.json").write_text(json.dumps(size, indent=2) + "\n")
        (tmp / "size.md").write_text(format_size_markdown(size))
        for fname, content in extra_files.items():
            p = tmp / fname
            if isinstance(content, bytes):
                p.write_bytes(content)
            else:
                p.write_text(content)
        files = [*IR_FILES, "size.json", "size.md", *extra_files]
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "target": trec,
            "model": {
                "ir": IR_FILES[0],
                "input": [model.in_h, model.in_w, model.in_c],
                "layers": [layer.name for layer in model.layers],
                "classes": list(model.classes),
            },
            "memories": mem_records,
            "files": [_file_record(tmp / f) for f in files],
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


# ----- loading ---------------------------------------------------------------------------
def _verify_file(folder: Path, rec: Any, what: str, manifest_path: Path) -> Path:
    if not isinstance(rec, dict) or not isinstance(rec.get("file"), str):
        raise ImageError(f"{manifest_path}: {what} has no file record")
    name = rec["file"]
    if "/" in name or "\\" in name or name.startswith("."):
        raise ImageError(f"{manifest_path}: {what} names file {name!r}, not a plain file name")
    path = folder / name
    if not path.is_file():
        raise ImageError(f"{path}: missing ({what} in {MANIFEST})")
    size = path.stat().st_size
    if size != rec.get("bytes"):
        raise ImageError(
            f"{path}: {size} bytes, the manifest says {rec.get('bytes')}; damaged or truncated"
        )
    digest = sha256_file(path)
    if digest != rec.get("sha256"):
        raise ImageError(
            f"{path}: sha256 {digest[:16]}... does not match the manifest "
            f"({str(rec.get('sha256'))[:16]}...); the file is damaged or was edited, recompile"
        )
    return path


def read_manifest(folder: str | Path) -> dict:
    """Read and version-check ``manifest.json`` of a model folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{folder}: no such folder (expected the output of xnorflow compile)")
    mpath = folder / MANIFEST
    if not mpath.is_file():
        raise ImageError(f"{mpath}: missing; is {folder} a folder written by xnorflow compile?")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ImageError(f"{mpath}: not valid JSON ({e}); damaged?") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ImageError(f"{mpath}: not an xnorflow memory-image manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ImageError(
            f"{mpath}: format version {version!r}, this xnorflow reads version "
            f"{FORMAT_VERSION}; recompile the model with this xnorflow"
        )
    for key, kind in (("target", dict), ("memories", list), ("files", list)):
        if not isinstance(manifest.get(key), kind):
            raise ImageError(f"{mpath}: field {key!r} missing or not a {kind.__name__}")
    return manifest


def load_model_folder(folder: str | Path, target: Any = None,
                      check_program: bool = True) -> LoadedFolder:
    """Load and check a folder written by :func:`write_model_folder`.

    Checks, in order: the manifest's format and version; the target (when ``target`` is
    given: same name, geometry and memory capacities); every listed file's size and sha256;
    each memory's hex syntax, depth and width, that hex and bin hold the same words and that
    the memory fits the recorded target; then the IR (:meth:`CompiledModel.load`) and, with
    ``check_program``, that the images are exactly what
    :func:`xnorflow.sw.program.build_memories` makes of that IR for the recorded target (so
    the software backends, which run the IR, and the accelerator, which runs the images,
    run the same model). Raises
    :class:`ImageError` naming the file at fault; returns ``(manifest, model, memories)``.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    mpath = folder / MANIFEST
    recorded = manifest["target"]
    if target is not None:
        _check_target(mpath, recorded, target)

    for rec in manifest["files"]:
        _verify_file(folder, rec, f"file {rec.get('file') if isinstance(rec, dict) else rec!r}",
                     mpath)
    listed = {rec["file"] for rec in manifest["files"]}
    for name in IR_FILES:
        if name not in listed:
            raise ImageError(f"{mpath}: does not list the IR file {name}")

    memories = []
    seen = set()
    for i, rec in enumerate(manifest["memories"]):
        if not isinstance(rec, dict):
            raise ImageError(f"{mpath}: memories[{i}] is not an object")
        name, width, depth = rec.get("name"), rec.get("width"), rec.get("depth")
        if not isinstance(name, str) or not _NAME_RE.match(name) or name in seen:
            raise ImageError(f"{mpath}: memories[{i}] has a bad or repeated name {name!r}")
        seen.add(name)
        for key, v in (("width", width), ("depth", depth)):
            if not isinstance(v, int) or isinstance(v, bool) or v < (1 if key == "width" else 0):
                raise ImageError(f"{mpath}: memory {name!r} has bad {key} {v!r}")
        hpath = _verify_file(folder, rec.get("hex"), f"memory {name!r} hex", mpath)
        bpath = _verify_file(folder, rec.get("bin"), f"memory {name!r} bin", mpath)
        try:
            text = hpath.read_bytes().decode("ascii")  # no newline translation
        except UnicodeDecodeError:
            raise ImageError(f"{hpath}: not ASCII text; damaged?") from None
        hwords = parse_hex(text, width, depth, hpath)
        bwords = parse_bin(bpath.read_bytes(), width, depth, bpath)
        if hwords != bwords:
            first = next(j for j, (a, b) in enumerate(zip(hwords, bwords, strict=True)) if a != b)
            raise ImageError(
                f"{hpath} and {bpath} disagree at word {first} "
                f"({hwords[first]:#x} vs {bwords[first]:#x}); recompile"
            )
        _check_fits_record(hpath, name, width, depth, recorded)
        memories.append(MemoryImage(name, width, _words_array(hwords, width),
                                    str(rec.get("layout", ""))))

    model = CompiledModel.load(folder)
    rec = manifest.get("model") or {}
    if rec.get("layers") != [layer.name for layer in model.layers] or rec.get("input") != [
        model.in_h, model.in_w, model.in_c
    ]:
        raise ImageError(f"{mpath}: its model record does not match {folder / IR_FILES[0]}")
    if check_program:
        _check_images_match_ir(folder, model, memories, target or target_from_record(recorded))
    return LoadedFolder(manifest, model, memories)


def _check_images_match_ir(folder: Path, model: CompiledModel, memories: list[MemoryImage],
                           target: Any) -> None:
    from .program import INPUT_WINDOWS, build_memories, decode_program

    ir = folder / IR_FILES[0]
    # compiled as its program says: the batch it was sized for and the input mode
    opts = {}
    prog = next((m for m in memories if m.name == "program"), None)
    if prog is not None:
        try:
            header, _ = decode_program(prog.words)
            opts = {"max_batch": int(header["max_batch"]),
                    "input_windows": header["input_mode"] == INPUT_WINDOWS}
        except UserError:
            pass  # not a program: the comparison below names the difference
    try:
        expected = build_memories(model, target, **opts)
    except UserError as e:
        raise ImageError(f"{ir}: the IR does not build for target {target.name!r}: {e}") from None
    got = {m.name: m for m in memories}
    want = {m.name: m for m in expected}
    if set(got) != set(want):
        raise ImageError(
            f"{folder / MANIFEST}: memories {sorted(got)}, but the IR in {ir.name} builds "
            f"{sorted(want)}; recompile"
        )
    for name, w in want.items():
        g = got[name]
        gw, ww = [int(v) for v in g.words], [int(v) for v in w.words]
        if g.width != w.width or gw != ww:
            if g.width != w.width:
                where = f"width {g.width} != {w.width}"
            elif len(gw) != len(ww):
                where = f"depth {len(gw)} != {len(ww)}"
            else:
                first = next(i for i, (a, b) in enumerate(zip(gw, ww, strict=True)) if a != b)
                where = f"word {first} differs"
            raise ImageError(
                f"{folder / (name + '.hex')}: does not match the IR in {ir.name} ({where}); "
                "the folder mixes two compiles or was edited: recompile"
            )
