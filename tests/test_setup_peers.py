"""scripts/setup_peers.sh (the optional LCE peer of benchmarks/cpu_kernel.py): its arguments.

Only the argument handling is tested: installing the peers downloads TensorFlow, which the
default tests must not need.
"""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "setup_peers.sh"


def _run(*args):
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_unknown_argument_is_one_line_and_exit_2():
    r = _run("--frobnicate")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "setup_peers: unknown argument '--frobnicate' (try --help)"]


def test_missing_values_and_bad_folder(tmp_path):
    for args in (["--dir"], ["--python"], ["--dir="]):
        r = _run(*args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, args
    f = tmp_path / "file"
    f.write_text("x")
    r = _run("--dir", str(f))
    assert r.returncode == 2 and "is not a folder" in r.stderr and f.read_text() == "x"


def test_wrong_python_is_refused_before_anything_is_made(tmp_path):
    dest = tmp_path / "peers"
    r = _run("--dir", str(dest), "--python", "no-such-python-xyz")
    assert r.returncode == 2 and "no-such-python-xyz" in r.stderr
    assert not dest.exists()


def test_check_and_help(tmp_path):
    r = _run("--check", "--dir", str(tmp_path))
    assert r.returncode == 1 and "not set up" in r.stdout
    assert list(tmp_path.iterdir()) == []
    r = _run("--help")
    assert r.returncode == 0 and "--dir DIR" in r.stdout and "--check" in r.stdout
