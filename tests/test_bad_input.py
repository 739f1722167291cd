"""Bad input at the command line: a table of hostile-but-fair commands, each of which must
exit 2 with one line naming the flag, file, layer or tensor at fault and the value, before
any long work starts, with nothing in the working folder changed; and a property test that
random mutations of valid commands never end in a traceback.

Every command runs in-process (:func:`xnorflow.cli.main`) in a scratch copy of a small
workspace: a 1-epoch digits MLP (``run``), it compiled for up5k (``run-up5k``), a second
model (``other``, ``other-up5k``), a DoReFa-2 model (``d2``), a compare report
(``report``), a folder of someone's notes and a plain file. Long work (training steps,
synthesis tools, backends, the teacher's training) is replaced by :class:`LongWork`, so a
check that comes too late shows up as ``LongWork`` instead of passing slowly.

Read-only folders are folders without write permission where that stops the process
(not root), else read-only tmpfs mounts; mount points and full disks are real tmpfs mounts
(root with mount rights); a case whose place cannot be made here is skipped, saying why.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xnorflow.cli import build_parser, main
from xnorflow.sw.boards import BOARDS


# ----- the workspace ----------------------------------------------------------------------
class LongWork(Exception):
    """Raised where long work would start: validation must have finished before this."""


def call(argv: list[str]) -> tuple[int, str, str]:
    """``xnorflow ARGV`` in-process: ``(exit code, stdout, stderr)``; LongWork (and any
    other exception: a traceback) propagates."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse: --help (0) or a bad flag (2)
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    return rc, out.getvalue(), err.getvalue()


def _quiet(*a, **k):
    pass


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """The workspace every case starts from (built once: ~3 s)."""
    from xnorflow.sim.compare import compare, write_report
    from xnorflow.sw.compiler import compile_checkpoint
    from xnorflow.sw.data import load_digits
    from xnorflow.sw.train import train

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    tpl = tmp_path_factory.mktemp("bad-input") / "tpl"
    data = load_digits()
    common = dict(epochs=1, batch=64, progress=False, log=_quiet, data=data)
    train({"model": "mlp", "dataset": "digits", "widths": [16]}, tpl / "run", **common)
    train({"model": "mlp", "dataset": "digits", "widths": [8]}, tpl / "other", **common)
    train({"model": "mlp", "dataset": "digits", "widths": [8], "mode": "dorefa",
           "act_bits": 2}, tpl / "d2", final_eval=False, **common)
    compile_checkpoint(tpl / "run", "up5k", tpl / "run-up5k")
    compile_checkpoint(tpl / "other", "up5k", tpl / "other-up5k")
    r = compare(str(tpl / "run-up5k"), data.x_test[:4], ["golden", "cpu"], labels=data.y_test[:4],
                progress=False)
    write_report(r, tpl / "report")
    (tpl / "notes").mkdir()
    (tpl / "notes" / "precious.txt").write_text("keep me\n")
    (tpl / "afile").write_text("a file, not a folder\n")
    torch.set_num_threads(n)
    return tpl


@pytest.fixture
def ws(template, tmp_path, monkeypatch) -> Path:
    """A scratch copy of the workspace, as the working folder."""
    dest = tmp_path / "ws"
    shutil.copytree(template, dest, symlinks=True)
    monkeypatch.chdir(dest)
    return dest


@pytest.fixture
def guard(monkeypatch) -> None:
    """Long work raises LongWork (what it was) instead of running."""
    import xnorflow.sim.backends
    import xnorflow.sim.compare
    import xnorflow.sw.teacher
    import xnorflow.sw.train
    import xnorflow.synth.build

    def stop(what):
        def f(*a, **k):
            raise LongWork(what)
        return f

    monkeypatch.setattr(xnorflow.sw.train, "_train_into", stop("training"))
    monkeypatch.setattr(xnorflow.synth.build, "tool_env", stop("synthesis"))
    monkeypatch.setattr(xnorflow.sim.compare, "compare", stop("compare's backends"))
    monkeypatch.setattr(xnorflow.sim.backends, "run", stop("a backend"))
    monkeypatch.setattr(xnorflow.sw.teacher, "FloatCNN", stop("teacher training"))


def snapshot(root: Path) -> dict[str, str]:
    """Every file (sha256), folder and link under ``root``."""
    out = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(d) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# ----- read-only places, mount points, full disks ----------------------------------------
@functools.cache
def mount_works() -> bool:
    """Whether this process may mount a tmpfs (root with mount rights)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    d = tempfile.mkdtemp()
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", d],
                           capture_output=True)
        if r.returncode == 0:
            subprocess.run(["umount", d], check=True)
        return r.returncode == 0
    finally:
        os.rmdir(d)


@functools.cache
def chmod_protects() -> bool:
    """Whether a folder without write permission stops this process (not for root)."""
    d = Path(tempfile.mkdtemp())
    try:
        d.chmod(0o555)
        try:
            (d / "probe").write_text("")
        except PermissionError:
            return True
        (d / "probe").unlink()
        return False
    finally:
        d.chmod(0o755)
        shutil.rmtree(d)


@dataclass
class Place:
    """A special folder ``name`` in the workspace holding copies of ``copy`` (workspace
    names): ``ro`` read-only (a tmpfs mounted read-only, or chmod 555 when not root),
    ``mnt`` a writable mount point, ``full`` a tiny tmpfs."""

    kind: str
    name: str
    copy: tuple[str, ...] = ()
    size: str = "4m"
    fill: str | None = None  # a workspace folder whose files are copied into the place itself


@contextlib.contextmanager
def place(ws: Path, p: Place):
    path = ws / p.name
    path.mkdir()
    mounted = False
    if p.kind in ("mnt", "full") or (p.kind == "ro" and not chmod_protects()):
        if not mount_works():
            pytest.skip(f"needs tmpfs mounts ({p.kind}): run as root with mount rights")
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={p.size}", "tmpfs", str(path)],
                       check=True)
        mounted = True
    try:
        for name in p.copy:
            shutil.copytree(ws / name, path / name)
        if p.fill:
            shutil.copytree(ws / p.fill, path, dirs_exist_ok=True)
        if p.kind == "ro":
            if mounted:
                subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
            else:
                for d, _, _ in os.walk(path):
                    os.chmod(d, 0o555)
        yield path
    finally:
        if mounted:
            subprocess.run(["umount", str(path)], check=True)
        else:
            for d, _, _ in os.walk(path):
                os.chmod(d, 0o755)


# ----- damaged inputs ----------------------------------------------------------------------
def _copy(ws: Path, src: str, dst: str) -> Path:
    shutil.copytree(ws / src, ws / dst)
    return ws / dst


def set_tensor(key: str, value: float, index=None) -> Callable[[Path], None]:
    """``bad/``: ``run`` with ``value`` written into one tensor (all of it if no index)."""
    def prepare(ws: Path) -> None:
        bad = _copy(ws, "run", "bad")
        state = torch.load(bad / "checkpoint.pt", weights_only=True)
        t = state["state_dict"][key]
        if index is None:
            t.fill_(value)
        else:
            t[index] = value
        torch.save(state, bad / "checkpoint.pt")
    return prepare


def edit_config(**changes) -> Callable[[Path], None]:
    def prepare(ws: Path) -> None:
        bad = _copy(ws, "run", "bad")
        cfg = json.loads((bad / "config.json").read_text())
        cfg.update(changes)
        (bad / "config.json").write_text(json.dumps(cfg))
    return prepare


def damage_run(how: str) -> Callable[[Path], None]:
    def prepare(ws: Path) -> None:
        bad = _copy(ws, "run", "bad")
        ck, cfg = bad / "checkpoint.pt", bad / "config.json"
        if how == "garbage":
            ck.write_bytes(b"not a checkpoint\n")
        elif how == "truncated":
            ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])
        elif how == "renamed":
            ck.rename(bad / "model.pt")
        elif how == "no-config":
            cfg.unlink()
        elif how == "bad-json":
            cfg.write_text("{ not json")
        elif how == "other-config":  # mixed: the config of another run
            shutil.copy(ws / "other" / "config.json", cfg)
    return prepare


def damage_model(how: str) -> Callable[[Path], None]:
    def prepare(ws: Path) -> None:
        bad = _copy(ws, "run-up5k", "badm")
        if how == "flip":
            text = (bad / "weights.hex").read_text()
            i = text.index("\n") - 1
            c = "0" if text[i] != "0" else "1"
            (bad / "weights.hex").write_text(text[:i] + c + text[i + 1:])
        elif how == "no-manifest":
            (bad / "manifest.json").unlink()
        elif how == "no-bin":
            (bad / "thresholds.bin").unlink()
        elif how == "mixed":  # thresholds of another compile, its checksums too
            for f in ("thresholds.hex", "thresholds.bin"):
                shutil.copy(ws / "other-up5k" / f, bad / f)
            man = json.loads((bad / "manifest.json").read_text())
            other = json.loads((ws / "other-up5k" / "manifest.json").read_text())
            for m, o in zip(man["memories"], other["memories"], strict=True):
                if m["name"] == "thresholds":
                    m.update(o)
            (bad / "manifest.json").write_text(json.dumps(man, indent=2))
        elif how == "other-target":
            man = json.loads((bad / "manifest.json").read_text())
            man["target"]["name"] = "hx8k"
            (bad / "manifest.json").write_text(json.dumps(man, indent=2))
    return prepare


# ----- the table -------------------------------------------------------------------------
@dataclass
class Case:
    """``xnorflow ARGV`` must exit 2 with one error line holding every string of
    ``expect`` and none of ``forbid``, and leave the workspace as it was. ``parse``: an
    argparse error (its usage lines come first). ``new``: issue 21's cases (fixed here);
    the others worked before and must keep working."""

    id: str
    argv: list[str]
    expect: tuple[str, ...]
    prepare: Callable[[Path], None] | None = None
    forbid: tuple[str, ...] = ()
    place: Place | None = None
    parse: bool = False
    new: bool = False
    needs: str | None = None


#: An error line: ``xnorflow CMD: error: ...`` (argparse's own: ``xnorflow: error: ...``).
ERROR = re.compile(r"xnorflow(?: (\S+))?: error: .*\S")

TRAIN = ["train", "--widths", "16", "--epochs", "1", "--quiet"]
RO = Place("ro", "ro", ("run", "run-up5k"))

CASES = [
    # --- issue 21: lost data, tracebacks, silent acceptance, misleading or late errors ---
    Case("train-over-run", [*TRAIN, "-o", "run"], ("run:", "--resume", "--force"), new=True),
    Case("train-out-file", [*TRAIN, "-o", "afile"], ("afile", "not a folder"), new=True),
    Case("train-out-under-file", [*TRAIN, "-o", "afile/sub"], ("afile/sub", "afile is a file"),
         new=True),
    Case("train-batch-0", [*TRAIN, "--batch", "0", "-o", "new"], ("--batch 0", "BatchNorm"),
         new=True),
    Case("train-batch-1", [*TRAIN, "--batch", "1", "-o", "new"], ("--batch 1", "BatchNorm"),
         new=True),
    Case("train-batch-per-process", [*TRAIN, "--batch", "3", "--nproc", "2", "-o", "new"],
         ("--batch 3", "per process"), new=True),
    Case("train-widths-empty", ["train", "--widths", "", "-o", "new"], ("--widths ''",),
         new=True),
    Case("train-widths-comma", ["train", "--widths", ",", "-o", "new"], ("--widths ','",),
         new=True),
    Case("train-augment-negative", [*TRAIN, "--augment", "-2", "-o", "new"],
         ("--augment -2",), new=True),
    Case("train-resume-missing", ["train", "--resume", "-o", "missing"],
         ("missing", "nothing to resume"), new=True),
    Case("train-resume-bad-config", ["train", "--resume", "-o", "bad"],
         ("bad/config.json", "cannot resume"), prepare=damage_run("bad-json"), new=True),
    Case("train-resume-other-config", ["train", "--resume", "--epochs", "2", "-o", "bad"],
         ("bad/checkpoint.pt", "(16, 64)", "(8, 64)"), prepare=damage_run("other-config"),
         new=True),
    Case("train-resume-and-force", ["train", "--resume", "--force", "-o", "run"],
         ("--resume and --force",), new=True),
    Case("train-force-not-a-run", [*TRAIN, "--force", "-o", "notes"],
         ("notes", "not a training run"), new=True),
    Case("train-seed-huge", [*TRAIN, "--seed", "9" * 20, "-o", "new"], ("--seed 999",),
         new=True),
    Case("train-seed-negative", [*TRAIN, "--seed", "-1", "-o", "new"], ("--seed -1",),
         new=True),
    Case("train-threads-huge", [*TRAIN, "--threads", "9" * 20, "-o", "new"],
         ("--threads 999",), new=True),
    Case("train-read-only", [*TRAIN, "-o", "ro/new"], ("ro/new", "cannot write"), place=RO,
         new=True),
    Case("train-resume-read-only", ["train", "--resume", "--epochs", "2", "-o", "ro/run"],
         ("ro/run", "cannot write"), place=RO, new=True),
    Case("train-force-read-only", [*TRAIN, "--force", "-o", "ro/run"],
         ("ro/run", "cannot write"), place=RO, new=True),
    Case("train-force-mount-point", [*TRAIN, "--force", "-o", "mnt"], ("mnt", "mount point"),
         place=Place("mnt", "mnt", fill="run"), new=True),
    Case("compile-nan-weight", ["compile", "bad", "-o", "out", "-q"],
         ("bad/checkpoint.pt", "blocks.0.op.weight", "nan"),
         prepare=set_tensor("blocks.0.op.weight", float("nan"), (3, 5)), new=True),
    Case("compile-nan-bn-gamma", ["compile", "bad", "-o", "out", "-q"],
         ("blocks.1.bn.weight", "nan"), prepare=set_tensor("blocks.1.bn.weight", float("nan"), 2),
         new=True),
    Case("compile-nan-running-var", ["compile", "bad", "-o", "out", "-q"],
         ("blocks.1.bn.running_var", "16 of 16"),
         prepare=set_tensor("blocks.1.bn.running_var", float("nan")), new=True),
    Case("compile-inf-bn-beta", ["compile", "bad", "-o", "out", "-q"],
         ("blocks.1.bn.bias", "inf"), prepare=set_tensor("blocks.1.bn.bias", float("-inf"), 0),
         new=True),
    Case("compile-nan-running-mean", ["compile", "bad", "-o", "out", "-q"],
         ("blocks.1.bn.running_mean", "nan"),
         prepare=set_tensor("blocks.1.bn.running_mean", float("nan"), 0), new=True),
    Case("compile-dorefa-sim", ["compile", "d2", "--target", "sim", "-o", "out", "-q"],
         ("layer 'L0'", "2-bit hidden", "--act-bits 1"), forbid=("use --target", "e.g. --target"),
         new=True),
    Case("compile-out-file", ["compile", "run", "-o", "afile", "-q"], ("afile", "not a folder"),
         forbid=("--force",), new=True),
    Case("compile-out-file-force", ["compile", "run", "-o", "afile", "--force", "-q"],
         ("afile", "not a folder"), forbid=("pass --force",), new=True),
    Case("compile-widths-mismatch", ["compile", "bad", "-o", "out", "-q"],
         ("blocks.0.op.weight", "(16, 64)", "(32, 64)", "config.json"),
         forbid=("Error(s) in loading",), prepare=edit_config(widths=[32]), new=True),
    Case("compile-mixed-config", ["compile", "bad", "-o", "out", "-q"],
         ("bad/checkpoint.pt", "(16, 64)", "(8, 64)"), prepare=damage_run("other-config"),
         new=True),
    Case("compile-read-only", ["compile", "run", "-o", "ro/new", "-q"],
         ("ro/new", "cannot write"), place=RO, new=True),
    Case("compile-force-read-only", ["compile", "run", "-o", "ro/run-up5k", "--force", "-q"],
         ("ro/run-up5k", "cannot write"), place=RO, new=True),
    Case("compile-force-mount-point", ["compile", "run", "-o", "mnt", "--force", "-q"],
         ("mnt", "mount point"), place=Place("mnt", "mnt", fill="run-up5k"), new=True),
    Case("compare-out-file", ["compare", "-m", "run-up5k", "-b", "golden,cpu", "-o", "afile"],
         ("afile", "not a folder"), new=True),
    Case("compare-out-model", ["compare", "-m", "run-up5k", "-b", "golden", "-o", "run-up5k"],
         ("run-up5k", "not a compare report"), new=True),
    Case("compare-out-run", ["compare", "-m", "run-up5k", "-b", "golden", "-o", "run"],
         ("run", "not a compare report"), new=True),
    Case("compare-read-only", ["compare", "-m", "run-up5k", "-b", "golden", "-o", "ro/rep"],
         ("ro/rep", "cannot write"), place=RO, new=True),
    Case("synth-baud-0", ["synth", "--board", "icebreaker", "--design", "loopback", "--baud",
                          "0"], ("--baud 0",), new=True),
    Case("synth-freq-0", ["synth", "--board", "icebreaker", "--freq", "0"], ("--freq 0",),
         new=True),
    Case("synth-outreg-ice40", ["synth", "--board", "hx8k-evn", "--bram-outreg"],
         ("--bram-outreg", "hx8k-evn", "ice40")),
    Case("synth-freq-pll", ["synth", "--board", "icebreaker", "--freq", "400"],
         ("--freq 400", "16-275 MHz")),
    Case("synth-baud-bridge", ["synth", "--board", "ulx3s-85f", "--design", "loopback",
                               "--baud", "6000000"], ("--baud 6000000", "FT231X", "3,000,000")),
    Case("synth-baud-clock", ["synth", "--board", "icebreaker", "--design", "loopback",
                              "--baud", "12000000"],
         ("--baud 12000000", f"{BOARDS['icebreaker'].default_freq / 1e6:g} MHz clock", "< 4")),
    Case("synth-default-baud-at-freq", ["synth", "--board", "icebreaker", "--design",
                                        "loopback", "--freq", "25"],
         ("default baud 3000000", "--baud", "MHz")),
    Case("synth-geometry-cols", ["synth", "--board", "icebreaker", "--geometry", "2x3x32"],
         ("2x3x32", "cols"), forbid=("'sim'",), new=True),
    Case("synth-geometry-width", ["synth", "--board", "icebreaker", "--geometry", "2x2x7"],
         ("2x2x7", "width"), forbid=("'sim'",), new=True),
    Case("synth-geometry-loopback", ["synth", "--board", "icebreaker", "--design", "loopback",
                                     "--geometry", "2x3x32"], ("2x3x32",), new=True),
    Case("synth-model-does-not-fit", ["synth", "--board", "icebreaker", "--model", "run-up5k",
                                      "--depth", "weights=4"], ("--model run-up5k", "weights"),
         new=True),
    Case("synth-model-loopback", ["synth", "--board", "icebreaker", "--design", "loopback",
                                  "--model", "run-up5k"], ("--model run-up5k", "loopback"),
         new=True),
    Case("synth-model-missing", ["synth", "--board", "icebreaker", "--model", "nosuch"],
         ("nosuch",), new=True),
    Case("synth-out-model-folder", ["synth", "--board", "icebreaker", "--design", "loopback",
                                    "--out", "run-up5k"], ("run-up5k", "not a bitstream"),
         new=True),
    Case("synth-read-only", ["synth", "--board", "icebreaker", "--design", "loopback", "--out",
                             "ro/bits"], ("ro/bits", "cannot write"), place=RO, new=True),
    Case("demo-out-run", ["demo", "--no-synth", "-o", "run"], ("run", "not a demo report"),
         new=True),
    Case("demo-out-file", ["demo", "--no-synth", "-o", "afile"], ("afile", "not a folder"),
         new=True),
    Case("demo-read-only", ["demo", "--no-synth", "-o", "ro/demo"], ("ro/demo", "cannot write"),
         place=RO, new=True),
    Case("teacher-batch-1", ["teacher", "--dataset", "digits", "--batch", "1", "-o", "t.npy"],
         ("--batch 1",), new=True),
    Case("teacher-over-file", ["teacher", "--dataset", "digits", "-o", "afile"],
         ("afile", "--force"), new=True),
    Case("teacher-read-only", ["teacher", "--dataset", "digits", "-o", "ro/t.npy"],
         ("ro/t.npy", "cannot write"), place=RO, new=True),
    # --- a sample of the cases that already worked: damaged, mixed, renamed folders ---
    Case("compile-missing", ["compile", "nosuch", "-o", "out"], ("nosuch", "not found")),
    Case("compile-not-a-run", ["compile", "notes", "-o", "out"], ("notes",)),
    Case("compile-garbage-checkpoint", ["compile", "bad", "-o", "out"],
         ("bad/checkpoint.pt", "cannot load"), prepare=damage_run("garbage")),
    Case("compile-truncated-checkpoint", ["compile", "bad", "-o", "out"],
         ("bad/checkpoint.pt",), prepare=damage_run("truncated")),
    Case("compile-renamed-checkpoint", ["compile", "bad", "-o", "out"],
         ("bad/checkpoint.pt", "no checkpoint"), prepare=damage_run("renamed")),
    Case("compile-no-config", ["compile", "bad", "-o", "out"], ("bad/config.json", "missing"),
         prepare=damage_run("no-config")),
    Case("compile-bad-json", ["compile", "bad", "-o", "out"], ("bad/config.json", "JSON"),
         prepare=damage_run("bad-json")),
    Case("compile-unknown-target", ["compile", "run", "--target", "up6k", "-o", "out"],
         ("up6k", "up5k")),
    Case("compile-exists", ["compile", "run", "-o", "run-up5k"], ("run-up5k", "--force")),
    Case("compile-force-not-a-model", ["compile", "run", "-o", "notes", "--force"],
         ("notes", "not a compiled model folder")),
    Case("run-missing-model", ["run", "-m", "nosuch"], ("nosuch",)),
    Case("run-flipped-byte", ["run", "-m", "badm"], ("weights",), prepare=damage_model("flip")),
    Case("run-no-manifest", ["run", "-m", "badm"], ("badm", "manifest"),
         prepare=damage_model("no-manifest")),
    Case("run-missing-image", ["run", "-m", "badm"], ("thresholds.bin",),
         prepare=damage_model("no-bin")),
    Case("run-mixed-images", ["run", "-m", "badm"], ("badm",), prepare=damage_model("mixed")),
    Case("run-other-target", ["run", "-m", "badm"], ("hx8k",),
         prepare=damage_model("other-target")),
    Case("run-training-folder", ["run", "-m", "run"], ("run",)),
    Case("run-unknown-backend", ["run", "-m", "run-up5k", "-b", "gpu"], ("gpu",)),
    Case("run-limit-0", ["run", "-m", "run-up5k", "--limit", "0"], ("--limit", "0")),
    Case("run-unknown-dataset", ["run", "-m", "run-up5k", "--dataset", "nosuch"], ("nosuch",)),
    Case("run-dataset-path-missing", ["run", "-m", "run-up5k", "--dataset", "fashion-mnist",
                                      "--data-path", "nosuch"], ("nosuch", "fashion-mnist")),
    Case("run-board-no-port", ["run", "-m", "run-up5k", "-b", "board"], ("--port",)),
    Case("run-board-baud-0", ["run", "-m", "run-up5k", "-b", "board", "--port", "x", "--baud",
                              "0"], ("--baud", "0")),
    Case("compare-no-backends", ["compare", "-m", "run-up5k", "-b", ","], ("--backends",)),
    Case("compare-unknown-backend", ["compare", "-m", "run-up5k", "-b", "golden,gpu"],
         ("gpu",)),
    Case("train-lr-0", [*TRAIN, "--lr", "0", "-o", "new"], ("--lr 0",)),
    Case("train-epochs-0", ["train", "--epochs", "0", "-o", "new"], ("--epochs 0",)),
    Case("train-device", [*TRAIN, "--device", "tpu", "-o", "new"], ("tpu",)),
    Case("train-nproc-0", [*TRAIN, "--nproc", "0", "-o", "new"], ("--nproc 0",)),
    Case("train-bn-momentum", [*TRAIN, "--bn-momentum", "2", "-o", "new"], ("--bn-momentum",)),
    Case("train-kd-without-teacher", [*TRAIN, "--kd-alpha", "0.5", "-o", "new"],
         ("--kd-alpha 0.5", "--teacher")),
    Case("train-teacher-missing", [*TRAIN, "--teacher", "nosuch.npy", "-o", "new"],
         ("nosuch.npy",)),
    Case("train-teacher-not-npy", [*TRAIN, "--teacher", "afile", "-o", "new"], ("afile",)),
    Case("train-unknown-dataset", [*TRAIN, "--dataset", "nosuch", "-o", "new"], ("nosuch",)),
    Case("train-in-bits", [*TRAIN, "--in-bits", "9", "-o", "new"], ("--in-bits 9",)),
    Case("train-act-bits", [*TRAIN, "--mode", "dorefa", "--act-bits", "3", "-o", "new"],
         ("--act-bits 3",)),
    Case("train-widths-token", ["train", "--widths", "abc", "-o", "new"], ("abc",)),
    Case("train-cnn-token", ["train", "--model", "cnn", "--widths", "8x:", "-o", "new"],
         ("8x",)),
    Case("synth-geometry-syntax", ["synth", "--board", "icebreaker", "--geometry", "4x4"],
         ("4x4", "ROWSxCOLSxWIDTH")),
    Case("synth-depth-syntax", ["synth", "--board", "icebreaker", "--depth", "weights=abc"],
         ("--depth",)),
    Case("synth-depth-unknown", ["synth", "--board", "icebreaker", "--depth", "nosuch=4"],
         ("nosuch",)),
    Case("import-missing", ["import", "nosuch.onnx", "-o", "imp"], ("nosuch.onnx",),
         needs="onnx"),
    Case("export-exists", ["export", "run-up5k", "--qonnx", "afile"], ("afile", "--force"),
         needs="onnx"),
    Case("export-to-folder", ["export", "run-up5k", "--qonnx", "notes", "--force"],
         ("notes", "folder"), needs="onnx"),
    Case("export-not-a-model", ["export", "notes", "--qonnx", "m.onnx"], ("notes",),
         needs="onnx"),
    Case("bad-flag", ["train", "-o", "new", "--no-such-flag"], ("--no-such-flag",), parse=True),
    Case("bad-int", ["train", "--epochs", "abc", "-o", "new"], ("--epochs", "abc"), parse=True),
    Case("bad-choice", ["train", "--mode", "ternary", "-o", "new"], ("ternary",), parse=True),
    Case("bad-board", ["synth", "--board", "nosuch"], ("nosuch",), parse=True),
    Case("missing-required", ["compile", "run"], ("-o",), parse=True),
]


def test_table_has_every_issue_case():
    new = [c for c in CASES if c.new]
    assert len(new) >= 45 and len(CASES) - len(new) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_is_one_line_exit_2_and_nothing_changes(case: Case, ws, guard):
    if case.needs and importlib.util.find_spec(case.needs) is None:
        pytest.skip(f"needs {case.needs} (pip install 'xnorflow[interop]')")
    if case.prepare:
        case.prepare(ws)
    with contextlib.ExitStack() as stack:
        if case.place:
            stack.enter_context(place(ws, case.place))
        before = snapshot(ws)
        rc, out, err = call(case.argv)
        after = snapshot(ws)
    assert "Traceback" not in out + err
    assert rc == 2, f"exit {rc}\nstdout: {out[-1500:]}\nstderr: {err[-1500:]}"
    lines = err.strip("\n").splitlines()
    msg = lines[-1]
    assert ERROR.match(msg) and ERROR.match(msg)[1] in (None, case.argv[0]), err
    if case.parse:  # argparse: the usage, then the error
        assert lines[0].startswith("usage: "), err
    else:
        assert msg.startswith(f"xnorflow {case.argv[0]}: error: ") and len(lines) == 1, err
    for s in case.expect:
        assert s in msg, f"{s!r} not in: {msg}"
    for s in case.forbid:
        assert s not in msg, f"{s!r} in: {msg}"
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"the workspace changed: {changed[:5]}"


# ----- what the fixes let through, and keep ------------------------------------------------
def test_train_force_replaces_a_run_only_when_the_new_one_is_done(ws, monkeypatch):
    from xnorflow.sw import train as train_mod

    old = snapshot(ws / "run")
    real_ce = train_mod.F.cross_entropy

    def nan_loss(*a, **k):
        return real_ce(*a, **k) * float("nan")

    with monkeypatch.context() as m:
        m.setattr(train_mod.F, "cross_entropy", nan_loss)
        rc, _, err = call([*TRAIN, "--widths", "8", "--force", "-o", "run"])
    assert rc == 2 and "run is left as it was" in err and len(err.splitlines()) == 1, err
    assert snapshot(ws / "run") == old
    assert not [p for p in ws.iterdir() if p.name.startswith(".")]  # no temporary left
    rc, _, err = call([*TRAIN, "--widths", "8", "--force", "-o", "run"])
    assert rc == 0, err
    assert json.loads((ws / "run" / "config.json").read_text())["widths"] == [8]
    assert snapshot(ws / "run") != old
    assert not [p for p in ws.iterdir() if p.name.startswith(".")]


def test_train_into_an_empty_folder_and_resume(ws):
    (ws / "empty").mkdir()
    assert call([*TRAIN, "--widths", "8", "-o", "empty"])[0] == 0
    rc, _, err = call(["train", "--resume", "--epochs", "2", "--quiet", "-o", "empty"])
    assert rc == 0, err
    assert torch.load(ws / "empty" / "checkpoint.pt", weights_only=True)["epoch"] == 2


def test_compare_replaces_its_own_report(ws, guard):
    from xnorflow.commands.compare import check_report_destination, is_report_folder

    assert is_report_folder(ws / "report")
    check_report_destination(ws / "report")  # no error: an earlier report may be replaced
    (ws / "empty").mkdir()
    assert is_report_folder(ws / "empty")
    assert not is_report_folder(ws / "run-up5k") and not is_report_folder(ws / "notes")


def test_synth_replaces_only_bitstream_folders(ws):
    from xnorflow.synth.build import check_out_folder, is_bitstream_folder

    bits = ws / "bits"
    bits.mkdir()
    assert is_bitstream_folder(bits)
    (bits / "top.bin").write_bytes(b"\0")
    assert not is_bitstream_folder(bits)  # a bitstream alone: not what synth leaves
    (bits / "report.json").write_text("{}")
    assert is_bitstream_folder(bits)
    check_out_folder(bits)
    for name in ("run-up5k", "run", "report", "notes"):
        assert not is_bitstream_folder(ws / name), name


def test_run_torch_help_says_what_it_runs():
    text = build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    flat = " ".join(text.split())
    assert "torch (PyTorch deploy mode: the folder's integer IR run with PyTorch convolutions" \
        in flat
    assert "needs the checkpoint" not in flat


def test_full_disk_keeps_the_last_checkpoint(ws):
    """Training onto a disk that fills up: one line, the checkpoint of the last epoch that
    fit stays whole, no temporary file is left."""
    with place(ws, Place("full", "full", size="40k")):
        rc, out, err = call([*TRAIN, "--epochs", "3", "-o", "full/run"])
        assert rc == 2 and len(err.splitlines()) == 1, err
        assert "No space left" in err and "full/run" in err
        state = torch.load(ws / "full" / "run" / "checkpoint.pt", weights_only=True)
        assert state["epoch"] >= 1 and f"epoch {state['epoch']}/3" in out
        assert not [p for p in (ws / "full" / "run").iterdir() if p.name.startswith(".")]


# ----- property: random mutations of valid commands never end in a traceback ------------
BASES = [
    [*TRAIN, "-o", "new"],
    ["train", "--resume", "--epochs", "2", "--quiet", "-o", "run"],
    ["compile", "run", "--target", "up5k", "-o", "out", "-q"],
    ["compile", "run-up5k", "--target", "sim", "-o", "out", "-q"],
    ["run", "-m", "run-up5k", "-b", "golden", "--limit", "5"],
    ["compare", "-m", "run-up5k", "-b", "golden,cpu", "--limit", "5", "-o", "rep"],
    ["synth", "--board", "icebreaker", "--model", "run-up5k", "-q"],
    ["synth", "--board", "icebreaker", "--design", "loopback", "--geometry", "1x1x16", "-q"],
    ["teacher", "--dataset", "digits", "--epochs", "1", "-o", "t.npy"],
] + ([["export", "run-up5k", "--qonnx", "m.onnx"]] if importlib.util.find_spec("onnx") else [])

#: Values a hostile but fair user might type anywhere.
VALUES = ["", " ", "0", "1", "2", "-1", "-2", "3.5", "1e309", "nan", "inf", "-inf", "9" * 25,
          "abc", "é", ",", ":", "=", "x", "2x3x32", "2x2x7", "0x0x0", "4x4", "1x1x16",
          "weights=0", "weights=abc", "afile", "afile/sub", "run", "run-up5k", "other-up5k",
          "d2", "report", "notes", "nosuch", "nosuch/deep", ".", "..", "/", "digits",
          "fashion-mnist", "mnist", "sim", "up5k", "hx8k", "golden", "cpu", "torch", "board",
          "golden,golden", "icebreaker", "loopback", "array", "cnn", "dorefa", "8,8p:"]


def _flags(cmd: str) -> list[tuple[str, bool, tuple]]:
    """``(flag, takes a value, its choices)`` of every option of subcommand ``cmd``."""
    sub = build_parser()._subparsers._group_actions[0].choices[cmd]
    return [(s, a.nargs != 0, tuple(a.choices or ())) for a in sub._actions
            for s in a.option_strings if s not in ("-h", "--help", "--install-libs")]


FLAGS = {b[0]: _flags(b[0]) for b in BASES}


#: Mutations, weighted towards those that reach the commands' own checks (a value changed,
#: a flag added) rather than argparse's (a flag's value dropped, tokens swapped).
OPS = ["value"] * 4 + ["insert"] * 4 + ["drop-flag", "drop", "duplicate", "swap"]


@st.composite
def mutated(draw) -> list[str]:
    argv = list(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(OPS))
        values = [i for i in range(1, len(argv)) if not argv[i].startswith("-")]
        flags = [i for i in range(1, len(argv)) if argv[i].startswith("-")]
        if op == "value" and values:
            argv[draw(st.sampled_from(values))] = draw(st.sampled_from(VALUES))
        elif op == "insert":
            i = draw(st.integers(1, len(argv)))
            flag, takes_value, choices = draw(st.sampled_from(FLAGS[argv[0]]))
            new = [flag]
            if takes_value:
                new.append(draw(st.sampled_from(VALUES + list(choices))))
            argv[i:i] = new
        elif op == "drop-flag" and flags:
            i = draw(st.sampled_from(flags))
            del argv[i: i + 1 + (i + 1 < len(argv) and not argv[i + 1].startswith("-"))]
        elif op in ("drop", "duplicate", "swap") and len(argv) > 2:
            i, j = draw(st.integers(1, len(argv) - 1)), draw(st.integers(1, len(argv) - 1))
            if op == "drop":
                del argv[i]
            elif op == "duplicate":
                argv.insert(i, argv[i])
            else:
                argv[i], argv[j] = argv[j], argv[i]
    return argv


@settings(max_examples=int(os.environ.get("XNORFLOW_FUZZ_EXAMPLES", "150")), deadline=None,
          derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(argv=mutated())
def test_mutated_commands_never_trace_back(argv, template, guard, tmp_path):
    """Exit 0, 1 or 2 (or LongWork: the checks passed and the work began); never another
    exception, never a traceback."""
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    shutil.copytree(template, work / "ws", symlinks=True)
    cwd = os.getcwd()
    os.chdir(work / "ws")
    n = torch.get_num_threads()
    try:
        try:
            rc, out, err = call(argv)
        except LongWork:
            rc, out, err = 0, "", ""
    finally:
        os.chdir(cwd)
        torch.set_num_threads(n)
        shutil.rmtree(work, ignore_errors=True)
    assert rc in (0, 1, 2), (argv, rc, err[-800:])
    assert "Traceback" not in out + err, (argv, err[-2000:])
    if rc == 2:  # a refusal says why, last
        lines = err.strip().splitlines()
        assert lines and ERROR.match(lines[-1]), (argv, err[-800:])

