"""Memory images format v1: write/load round trip, corruption, wrong target, atomicity."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

from xnorflow.sw import files, golden, images
from xnorflow.sw.errors import UserError
from xnorflow.sw.images import (
    ImageError,
    MemoryImage,
    bin_bytes,
    hex_text,
    load_model_folder,
    parse_bin,
    parse_hex,
    write_model_folder,
)
from xnorflow.sw.program import build_memories, execute
from xnorflow.sw.targets import TARGETS

from .model_folders import mlp

ECP5 = TARGETS["ecp5-85f"]  # 8x8x32: 256-bit weight and threshold words


@pytest.fixture
def compiled(tmp_path):
    model = mlp()
    tgt = ECP5
    mems = build_memories(model, tgt)
    out = tmp_path / "out"
    manifest = write_model_folder(out, model, tgt, mems)
    return out, model, tgt, mems, manifest


def test_hex_and_bin_encodings_by_hand():
    img = MemoryImage("m", 12, np.array([0x0, 0xABC, 0x123], np.uint64), "")
    assert hex_text(img) == "000\nabc\n123\n"
    assert bin_bytes(img) == bytes([0x00, 0x00, 0xBC, 0x0A, 0x23, 0x01])
    assert parse_hex("000\nabc\n123\n", 12, 3) == [0, 0xABC, 0x123]
    assert parse_bin(bin_bytes(img), 12, 3) == [0, 0xABC, 0x123]


@pytest.mark.parametrize("width", [1, 7, 8, 16, 31, 32, 33, 64, 65, 100])
def test_word_codecs_round_trip_any_width(width):
    rng = np.random.default_rng(width)
    vals = [int(rng.integers(0, 2**62)) % (1 << width) for _ in range(20)]
    vals += [(1 << width) - 1, 0]
    words = np.asarray(vals, np.uint64) if width <= 64 else np.asarray(vals, object)
    img = MemoryImage("m", width, words, "")
    text, data = hex_text(img), bin_bytes(img)
    assert all(len(line) == -(-width // 4) for line in text.splitlines())
    assert len(data) == len(vals) * -(-width // 8)
    assert parse_hex(text, width, len(vals)) == vals
    assert parse_bin(data, width, len(vals)) == vals


def test_word_too_wide_for_memory_is_a_bug():
    with pytest.raises(ValueError, match="does not fit 4 bits"):
        hex_text(MemoryImage("m", 4, np.array([16], np.uint64), ""))


def test_round_trip(compiled):
    out, model, tgt, mems, manifest = compiled
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["manifest.json", "model.json", "model.npz", "size.json", "size.md",
                            *(f"{m.name}.{e}" for m in mems for e in ("hex", "bin"))])
    man, loaded, lmems = load_model_folder(out, tgt)
    assert man == manifest == json.loads((out / "manifest.json").read_text())
    assert man["format_version"] == images.FORMAT_VERSION
    assert man["target"]["geometry"] == "8x8x32"
    assert [m.name for m in lmems] == [m.name for m in mems]
    for a, b in zip(mems, lmems, strict=True):
        assert (a.width, a.depth, a.layout) == (b.width, b.depth, b.layout)
        assert [int(w) for w in a.words] == [int(w) for w in b.words]
        assert b.words.dtype == (np.uint64 if b.width <= 64 else object)
    x = np.random.default_rng(1).integers(0, 256, (16, 1, 1, 64)).astype(np.uint8)
    ref = golden.run(model, x)
    assert np.array_equal(ref.scores, golden.run(loaded, x).scores)
    # the loaded images, run as the sequencer runs them, give the same scores
    for i in range(4):
        assert np.array_equal(execute(lmems, x[i], tgt).scores, ref.scores[i])
    # the folder loads without naming a target too, and the hex file is $readmemh text
    load_model_folder(out)
    first = (out / "weights.hex").read_text().splitlines()[0]
    weights = next(m for m in mems if m.name == "weights")
    # 2048-bit words on ecp5-85f (a 256-bit word per array row)
    assert int(first, 16) == int(weights.words[0]) and len(first) == 512


@pytest.mark.parametrize("fname", ["weights.bin", "weights.hex", "thresholds.bin", "program.hex",
                                   "model.npz", "model.json", "size.json"])
def test_one_flipped_byte_is_refused_naming_the_file(compiled, fname):
    out, *_, tgt, _, _ = compiled
    p = out / fname
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    with pytest.raises(ImageError, match=rf"{fname}.*sha256"):
        load_model_folder(out, tgt)


def test_hex_and_bin_must_agree_even_with_matching_checksums(compiled):
    """Someone edits a hex file and fixes up its checksum: the bin still disagrees."""
    out, *_ = compiled
    hp = out / "thresholds.hex"
    lines = hp.read_text().splitlines()
    lines[0] = f"{int(lines[0], 16) ^ 1:0{len(lines[0])}x}"
    hp.write_text("\n".join(lines) + "\n")
    man = json.loads((out / "manifest.json").read_text())
    rec = next(m for m in man["memories"] if m["name"] == "thresholds")["hex"]
    rec["sha256"] = images.sha256_file(hp)
    (out / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ImageError, match=r"thresholds.hex and .*thresholds.bin disagree at word 0"):
        load_model_folder(out)


def test_bad_hex_syntax_and_depth_are_refused():
    with pytest.raises(ImageError, match=r"w.hex: line 2 is 'ABC'"):
        parse_hex("000\nABC\n", 12, 2, "w.hex")
    with pytest.raises(ImageError, match="3 lines, the manifest says depth 2"):
        parse_hex("000\n000\n000\n", 12, 2, "w.hex")
    with pytest.raises(ImageError, match="no newline"):
        parse_hex("000\n000", 12, 2, "w.hex")
    with pytest.raises(ImageError, match="does not fit 10 bits"):
        parse_hex("fff\n", 10, 1, "w.hex")
    with pytest.raises(ImageError, match="bits set above bit 9"):
        parse_bin(bytes([0xFF, 0xFF]), 10, 1, "w.bin")
    with pytest.raises(ImageError, match="3 bytes, expected depth 1 x 2 bytes"):
        parse_bin(bytes(3), 10, 1, "w.bin")


def test_wrong_target_is_refused_naming_both(compiled):
    out, *_ = compiled
    with pytest.raises(ImageError, match=r"compiled for target 'ecp5-85f' \(8x8x32\), not "
                                         r"'up5k' \(8x2x32\); recompile with --target up5k"):
        load_model_folder(out, TARGETS["up5k"])


def test_changed_target_definition_is_refused(compiled):
    out, *_ = compiled
    new = ECP5.acc_bits - 4
    with pytest.raises(ImageError, match=f"target 'ecp5-85f' had acc_bits = {ECP5.acc_bits} "
                                         f".* now {new}"):
        load_model_folder(out, dataclasses.replace(ECP5, acc_bits=new))


def test_image_larger_than_recorded_capacity_is_refused(compiled):
    out, *_ = compiled
    man = json.loads((out / "manifest.json").read_text())
    man["target"]["memories"]["weights"]["depth"] = 1
    (out / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ImageError, match=r"weights.hex: memory 'weights' holds \d+ words but "
                                         r"target 'ecp5-85f' has room for 1"):
        load_model_folder(out)


def test_writing_images_that_do_not_fit_is_a_bug(tmp_path):
    model = mlp()
    small = dataclasses.replace(ECP5, memories={**ECP5.memories, "weights": (2048, 1)})
    with pytest.raises(ValueError, match="do not fit their target"):
        write_model_folder(tmp_path / "o", model, small, build_memories(model, ECP5))
    assert list(tmp_path.iterdir()) == []


def _rehash(out, fname):
    man = json.loads((out / "manifest.json").read_text())
    recs = man["files"] + [m[k] for m in man["memories"] for k in ("hex", "bin")]
    for rec in recs:
        if rec["file"] == fname:
            rec["sha256"] = images.sha256_file(out / fname)
            rec["bytes"] = (out / fname).stat().st_size
    (out / "manifest.json").write_text(json.dumps(man))


def test_images_from_another_compile_are_refused(compiled, tmp_path):
    """Images and IR of two compiles, checksums fixed up: the IR no longer builds the images."""
    out, model, tgt, *_ = compiled
    other = mlp(seed=7)
    other.save(tmp_path)
    for f in ("model.json", "model.npz"):
        (out / f).write_bytes((tmp_path / f).read_bytes())
        _rehash(out, f)
    with pytest.raises(ImageError, match=r"weights.hex: does not match the IR in model.json "
                                         r"\(word \d+ differs\).*recompile"):
        load_model_folder(out, tgt)
    # the images alone still load when asked not to compare them with the IR
    assert load_model_folder(out, tgt, check_program=False).model.layers[0].name == "fc1"


def test_manifest_version_mismatch_is_refused(compiled):
    out, *_ = compiled
    man = json.loads((out / "manifest.json").read_text())
    man["format_version"] = 2
    (out / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ImageError, match=r"manifest.json: format version 2, this xnorflow reads "
                                         r"version 1"):
        load_model_folder(out)


def test_manifest_depth_mismatch_is_refused(compiled):
    out, *_ = compiled
    man = json.loads((out / "manifest.json").read_text())
    rec = man["memories"][0]
    rec["depth"] += 1
    (out / "manifest.json").write_text(json.dumps(man))
    d, name = rec["depth"], rec["name"]
    with pytest.raises(ImageError, match=rf"{name}.hex: {d - 1} lines, the manifest says "
                                         rf"depth {d}"):
        load_model_folder(out)


def test_missing_and_foreign_folders(tmp_path, compiled):
    with pytest.raises(ImageError, match="no such folder"):
        load_model_folder(tmp_path / "nope")
    with pytest.raises(ImageError, match="manifest.json: missing"):
        load_model_folder(tmp_path)
    out, *_ = compiled
    (out / "program.bin").unlink()
    with pytest.raises(ImageError, match=r"program.bin: missing"):
        load_model_folder(out)


def test_existing_folder_needs_force(compiled):
    out, model, tgt, mems, _ = compiled
    before = (out / "manifest.json").read_bytes()
    with pytest.raises(UserError, match="already exists; pass --force"):
        write_model_folder(out, model, tgt, mems)
    assert (out / "manifest.json").read_bytes() == before
    mems2 = build_memories(mlp(seed=5), tgt)
    write_model_folder(out, mlp(seed=5), tgt, mems2, force=True)
    assert (out / "manifest.json").read_bytes() != before
    load_model_folder(out, tgt)
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]  # no temp or backup left


def test_force_never_replaces_a_folder_that_is_not_a_model_folder(tmp_path):
    model, tgt = mlp(), ECP5
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "precious.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a compiled model folder"):
        write_model_folder(tmp_path / "home", model, tgt, build_memories(model, tgt), force=True)
    assert (tmp_path / "home" / "precious.txt").read_text() == "keep me"


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("existing", [False, True])
def test_failure_mid_write_leaves_nothing_behind(tmp_path, monkeypatch, existing):
    model, tgt = mlp(), ECP5
    mems = build_memories(model, tgt)
    out = tmp_path / "out"
    if existing:
        write_model_folder(out, model, tgt, mems)
    snapshot = {p.name: p.read_bytes() for p in out.iterdir()} if existing else None

    calls = []
    real = images.bin_bytes

    def failing_bin_bytes(image):
        calls.append(image.name)
        if len(calls) == 2:  # the first memory's files are already on disk
            raise Boom("disk full")
        return real(image)

    monkeypatch.setattr(images, "bin_bytes", failing_bin_bytes)
    with pytest.raises(Boom):
        write_model_folder(out, mlp(seed=9), tgt, build_memories(mlp(seed=9), tgt),
                           force=True)
    assert calls == [mems[0].name, mems[1].name]
    left = sorted(p.name for p in tmp_path.iterdir())
    if existing:
        assert left == ["out"]
        assert {p.name: p.read_bytes() for p in out.iterdir()} == snapshot
        load_model_folder(out, tgt)
    else:
        assert left == []


def test_failure_of_the_final_rename_restores_the_old_folder(compiled, monkeypatch):
    out, model, tgt, mems, _ = compiled
    snapshot = {p.name: p.read_bytes() for p in out.iterdir()}
    real_rename = os.rename

    def rename(src, dst):
        if Path(dst) == out and ".tmp-" in Path(src).name:
            raise OSError("rename failed")
        return real_rename(src, dst)

    monkeypatch.setattr(files.os, "rename", rename)
    with pytest.raises(OSError, match="rename failed"):
        write_model_folder(out, mlp(seed=3), tgt, build_memories(mlp(seed=3), tgt), force=True)
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == snapshot


DOC = Path(__file__).resolve().parents[2] / "docs" / "memory-images.md"


def test_doc_worked_example_runs():
    import doctest

    result = doctest.testfile(str(DOC), module_relative=False, verbose=False)
    assert result.attempted >= 8 and result.failed == 0


def test_doc_names_every_manifest_field(compiled):
    *_, manifest = compiled
    doc = DOC.read_text()
    fields = [*manifest, *(f"target.{k}" for k in manifest["target"]),
              *(f"model.{k}" for k in manifest["model"]),
              *(f"memories[].{k}" for k in manifest["memories"][0])]
    assert [f for f in fields if f"`{f}" not in doc] == []


def test_extra_files_are_listed_and_checked(tmp_path):
    model = mlp()
    out = tmp_path / "o"
    man = write_model_folder(out, model, ECP5, build_memories(model, ECP5),
                             extra_files={"notes.txt": "hello\n", "blob.bin": b"\x00\x01"})
    assert {"notes.txt", "blob.bin"} <= {rec["file"] for rec in man["files"]}
    load_model_folder(out, ECP5)
    (out / "notes.txt").write_text("hellO\n")
    with pytest.raises(ImageError, match="notes.txt: sha256"):
        load_model_folder(out, ECP5)
    with pytest.raises(ValueError, match="reserved"):
        write_model_folder(tmp_path / "p", model, ECP5, build_memories(model, ECP5),
                           extra_files={"weights.hex": "x"})


def test_crlf_hex_is_refused_even_with_fixed_checksums(compiled):
    out, *_ = compiled
    hp = out / "program.hex"
    hp.write_bytes(hp.read_bytes().replace(b"\n", b"\r\n"))
    _rehash(out, "program.hex")
    with pytest.raises(ImageError, match=r"program.hex: line 1 is '[0-9a-f]+\\r'"):
        load_model_folder(out)
