"""Atomic files and folders: whole or old, umask permissions, one-line errors on full or
read-only disks with the old state intact."""

import errno
import os
import stat
import tempfile
from pathlib import Path

import pytest

from xnorflow.sw import files
from xnorflow.sw.errors import UserError


@pytest.fixture(params=[0o022, 0o077, 0o002])
def mask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_umask_is_read_without_changing_it(mask):
    assert files.umask() == mask
    assert files.umask() == mask


def test_permissions_follow_the_umask(tmp_path, mask):
    files.write_text(tmp_path / "a.txt", "x")
    assert _mode(tmp_path / "a.txt") == 0o666 & ~mask
    with files.atomic_file(tmp_path / "b.npz", suffix=".npz") as tmp:
        assert tmp.name.endswith(".npz")
        tmp.write_bytes(b"y")
    assert _mode(tmp_path / "b.npz") == 0o666 & ~mask
    with files.atomic_folder(tmp_path / "d") as tmp:
        (tmp / "f").write_text("z")
        (tmp / "sub").mkdir()
    assert _mode(tmp_path / "d") == 0o777 & ~mask
    assert _mode(tmp_path / "d" / "sub") == 0o777 & ~mask
    assert (tmp_path / "d" / "f").read_text() == "z"


def test_file_is_whole_or_old(tmp_path):
    path = tmp_path / "out.txt"
    files.write_text(path, "old")
    with pytest.raises(RuntimeError), files.atomic_file(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    files.write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_folder_replaces_the_old_one_only_when_done(tmp_path):
    out = tmp_path / "out"
    with files.atomic_folder(out) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError), files.atomic_folder(out) as tmp:
        (tmp / "b").write_text("2")
        assert (out / "a").read_text() == "1"  # the old one is there while we work
        raise RuntimeError("body failed")
    assert sorted(p.name for p in out.iterdir()) == ["a"]
    with files.atomic_folder(out) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporaries left


def test_folder_refuses_to_replace_a_file(tmp_path):
    (tmp_path / "f").write_text("keep")
    with pytest.raises(UserError, match="not a folder"), files.atomic_folder(tmp_path / "f"):
        pass
    assert (tmp_path / "f").read_text() == "keep"


def _one_line(e: UserError, path: Path) -> str:
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    files.write_bytes(path, b"good")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(UserError) as e:
        files.write_bytes(path, b"new, but the disk is full")
    assert "No space left" in _one_line(e, path)
    assert path.read_bytes() == b"good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_read_only_place_is_one_line(tmp_path, monkeypatch):
    def read_only(*a, dir=None, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(Path(dir) / ".tmpx"))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    with pytest.raises(UserError) as e:
        files.write_text(tmp_path / "r.json", "{}")
    assert "Read-only" in _one_line(e, tmp_path / "r.json")
    with pytest.raises(UserError) as e, files.atomic_folder(tmp_path / "model"):
        pass
    _one_line(e, tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


def test_full_disk_in_a_folder_keeps_the_old_folder(tmp_path):
    out = tmp_path / "model"
    with files.atomic_folder(out) as tmp:
        (tmp / "weights.hex").write_text("old")
    with pytest.raises(UserError) as e, files.atomic_folder(out) as tmp:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "weights.hex"))
    _one_line(e, out)
    assert (out / "weights.hex").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_other_errors_pass_through(tmp_path):
    """An error about another file (an input the body reads) is not a write error."""
    with pytest.raises(PermissionError), files.atomic_folder(tmp_path / "o"):
        raise PermissionError(errno.EACCES, "Permission denied", "/elsewhere/input.pt")
    with pytest.raises(OSError, match="rename failed"), files.atomic_folder(tmp_path / "o"):
        raise OSError("rename failed")
    assert list(tmp_path.iterdir()) == []


def test_replace_folder_publishes_a_finished_folder(tmp_path, mask, monkeypatch):
    out = tmp_path / "block"
    with files.atomic_folder(out) as tmp:
        (tmp / "old").write_text("1")
    work = tmp_path / ".block.work"
    work.mkdir(mode=0o700)
    (work / "new").write_text("2")
    files.replace_folder(work, out)
    assert sorted(p.name for p in out.iterdir()) == ["new"]
    assert _mode(out) == 0o777 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["block"]
    # a failed rename puts the old folder back and leaves the work folder for its logs
    work.mkdir()
    real = os.rename

    def rename(src, dst):
        if Path(src) == work:
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst)

    monkeypatch.setattr(files.os, "rename", rename)
    with pytest.raises(UserError):
        files.replace_folder(work, out)
    assert sorted(p.name for p in out.iterdir()) == ["new"] and work.is_dir()
