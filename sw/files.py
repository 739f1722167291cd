"""Writing files and folders so that nobody ever sees half of one.

Every file or folder xnorflow publishes (compiled models, checkpoints, reports, bitstreams,
generated Verilog, benchmark results) goes through this module:

* :func:`write_bytes` / :func:`write_text`: the whole file or the old one, never a mix;
* :func:`atomic_file`: the same for writers that want a path (``np.savez``,
  ``Figure.savefig``, ``torch.save``);
* :func:`atomic_folder`: a folder built under a temporary name next to the destination and
  renamed into place; an existing folder is moved aside first, kept until the new one is in
  place, and put back if that fails (:func:`replace_folder` does the same for a folder the
  caller built and keeps when its work fails).

Each is built under a temporary name in the destination's own folder (a rename is atomic only
within one file system) and gets the permissions an ordinary ``open``/``mkdir`` would give it
(``0o666`` / ``0o777`` less the umask), not the ``0o600``/``0o700`` of ``tempfile``.

A destination that cannot be written (a read-only file system, a full disk, no permission)
raises :class:`~xnorflow.sw.errors.UserError`, one line naming the path, with the old file or
folder intact and no temporary left behind. Other errors pass through unchanged.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

__all__ = ["atomic_file", "atomic_folder", "check_can_create", "check_writable",
           "existing_folder_only", "make_dirs", "replace_folder", "umask", "write_bytes",
           "write_text"]

#: ``errno`` values that mean "this place cannot be written", not "this program is wrong"
#: (``EBUSY``: a mount point cannot be renamed, so it cannot be replaced).
_DISK_ERRORS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EBUSY}


def umask() -> int:
    """This process's umask (read without changing it where ``/proc`` tells it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _unwritable(e: OSError, path: Path, *places: Path) -> UserError | None:
    """The one-line error for ``e`` if it says that ``path`` cannot be written, else None.

    With ``places``, an error that names a file outside all of them (an input the caller
    was reading, say) is not about ``path`` and gives None too.
    """
    if e.errno not in _DISK_ERRORS:
        return None
    if e.filename is not None and places:
        f = Path(os.fsdecode(e.filename)).absolute()
        if not any(f == p or p in f.parents for p in (q.absolute() for q in places)):
            return None
    return UserError(f"{path}: cannot write ({e.strerror or e})")


@contextmanager
def atomic_file(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` when the body succeeds.

    ``suffix`` ends the temporary name (``np.savez`` adds ``.npz`` to a name without it;
    ``savefig`` picks the format from it). If the body raises, ``path`` is untouched.
    """
    path = Path(path)
    make_dirs(path.parent)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}",
                                    dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise _unwritable(e, path) or e from None
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        err = _unwritable(e, path, tmp, path.parent)
        if err is None:
            raise
        raise err from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (flushed to disk before the rename)."""
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` atomically."""
    write_bytes(path, text.encode())


def make_dirs(path: str | Path) -> Path:
    """``mkdir -p path``; :class:`UserError`, one line naming the path, when it cannot be
    made (a read-only or full disk, or a file in the way)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        where = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()),
                     path)
        raise UserError(f"{path}: cannot make this folder, {where} is a file; choose another "
                        "destination") from None
    except OSError as e:
        raise _unwritable(e, path) or e from None
    return path


def check_writable(folder: str | Path, what: str | Path | None = None) -> None:
    """Make and remove a temporary file in ``folder``: :class:`UserError`, one line naming
    ``what`` (default: the folder), if it cannot be written (call before long work that
    writes there later)."""
    folder = Path(folder)
    try:
        fd, name = tempfile.mkstemp(prefix=".write-test.", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise _unwritable(e, Path(what or folder)) or e from None


def check_can_create(out: str | Path) -> None:
    """Check, without making anything, that ``out`` (a file or folder written atomically, so
    built beside it) can be made: its nearest existing parent folder takes a temporary file.
    :class:`UserError`, one line naming ``out``, if not (call before long work)."""
    out = Path(out)
    place = out.absolute().parent
    while not place.exists() and place != place.parent:
        place = place.parent
    if not place.is_dir():
        raise UserError(f"{out}: cannot make it, {place} is a file; choose another destination")
    check_writable(place, out)


def existing_folder_only(out: Path) -> None:
    """The default destination check: whatever is at ``out`` must be a folder (not a file or
    a link) and not a mount point (which cannot be renamed), which :func:`atomic_folder` may
    then replace."""
    out = Path(out)
    if (out.exists() or out.is_symlink()) and (out.is_symlink() or not out.is_dir()):
        raise UserError(f"{out}: exists and is not a folder; choose another destination")
    if out.is_dir() and os.path.ismount(out):
        raise UserError(f"{out}: is a mount point, which cannot be replaced; choose a folder "
                        "inside it")


def report_holds(folder: str | Path, keys) -> bool:
    """Whether ``folder/report.json`` is a JSON object with every one of ``keys`` (False when
    it is missing, unreadable or not such an object): how a command recognises a folder it
    wrote itself."""
    try:
        doc = json.loads((Path(folder) / "report.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and set(keys) <= doc.keys()


def is_report_folder(folder: str | Path, keys) -> bool:
    """Whether ``folder`` is empty or holds a report with ``keys`` (:func:`report_holds`):
    the only folders a command's ``-o`` may replace."""
    return not any(Path(folder).iterdir()) or report_holds(folder, keys)


@contextmanager
def atomic_folder(out_dir: str | Path,
                  check: Callable[[Path], None] = existing_folder_only) -> Iterator[Path]:
    """Yield a fresh temporary folder next to ``out_dir``; rename it to ``out_dir`` on success.

    ``check(out_dir)`` raises if the destination may not be written; it runs before the body
    and again just before the rename (the world may have changed meanwhile). If the body
    raises, the temporary folder is removed and ``out_dir`` is untouched. An existing
    ``out_dir`` is moved aside, removed only once the new folder is in place, and moved back
    if the final rename fails.
    """
    out = Path(out_dir)
    check(out)
    make_dirs(out.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as e:
        raise _unwritable(e, out) or e from None
    try:
        yield tmp
        check(out)
        _swap_in(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        err = _unwritable(e, out, tmp, out.parent)
        if err is None:
            raise
        raise err from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(new: Path, out: Path) -> None:
    """Rename folder ``new`` to ``out``, with the umask's permissions; an existing ``out`` is
    moved aside first, removed once ``new`` is in place, and moved back if that fails."""
    os.chmod(new, 0o777 & ~umask())
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rmdir(old)
        os.rename(out, old)
        try:
            os.rename(new, out)
        except BaseException:
            os.rename(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(new, out)


def replace_folder(new: str | Path, out_dir: str | Path) -> None:
    """Publish ``new``, a finished folder beside ``out_dir`` (same file system), as
    ``out_dir``, as :func:`atomic_folder` does at its end; for work that keeps its folder when
    it fails (the logs of a failed tool). :class:`UserError` if ``out_dir`` cannot be written,
    with the old one intact."""
    new, out = Path(new), Path(out_dir)
    existing_folder_only(out)
    try:
        _swap_in(new, out)
    except OSError as e:
        err = _unwritable(e, out, new, out.parent)
        if err is None:
            raise
        raise err from None
