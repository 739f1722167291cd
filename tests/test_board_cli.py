"""A board as a backend, end to end over a real pseudo-terminal, against a Python board model.

No board is attached here, so the far end of a pty pair runs :class:`tests.board_model.
PtyBoard`: it speaks the host protocol byte by byte, keeps the memories it is sent and runs
each START with :func:`xnorflow.sw.program.execute`. The host side is the real one: pyserial
on the tty (:class:`xnorflow.hw.link.SerialTransport`), the driver, the session, the
``board`` backend of ``xnorflow run`` / ``compare`` and ``xnorflow board`` -- not the
gateware (the cocotb board-top tests do that).
"""

import json
import os

import numpy as np
import pytest

from xnorflow.cli import main
from xnorflow.hw import link
from xnorflow.sim import backends
from xnorflow.sw import golden, program, synthetic
from xnorflow.sw.data import load_dataset

from .board_model import PtyBoard

pytestmark = pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a POSIX pty")


@pytest.fixture
def digits_model(tmp_path):
    model = synthetic.random_network(11, in_shape=(8, 8, 1), in_bits=4, classes=10)
    target = synthetic.geometry_target(2, 2, 16)
    folder = tmp_path / "model"
    synthetic.write_folder(model, target, folder)
    return folder, model, target


def digits(n: int) -> np.ndarray:
    return load_dataset("digits").x_test[:n]


@pytest.mark.parametrize("batch, frames", [
    # status + 3 memories; the first run: input / start / 2 status polls / scores; the others:
    # input / start / a READ answered BUSY / the scores (max_batch 2: 3 runs)
    (None, 1 + 3 + 5 + 2 * 4),
    ("1", 1 + 3 + 5 + 5 * 4),
])
def test_board_over_pty(digits_model, capsys, batch, frames):
    folder, model, target = digits_model
    with PtyBoard(target, digits(6)) as board:
        rc = main(["board", "--port", board.port, "--model", str(folder), "--count", "6",
                   "--dataset", "digits", "--timeout", "5", *(["--batch", batch] if batch
                                                              else [])])
    out = capsys.readouterr().out
    assert board.failure is None
    assert rc == 0, out
    assert "class agrees with golden 6/6, scores agree 6/6" in out
    assert f"baud, {batch or 2} per START" in out
    assert board.frames == frames


def test_board_batch_above_max_batch_is_one_line(digits_model, capsys):
    folder, _, _ = digits_model
    rc = main(["board", "--port", "/dev/ttyXNORFLOW-missing", "--model", str(folder),
               "--batch", "3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--batch 3: this program runs 1..2" in err[0], err


def test_board_missing_port_is_one_line(digits_model, capsys):
    folder, _, _ = digits_model
    rc = main(["board", "--port", "/dev/ttyXNORFLOW-missing", "--model", str(folder)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and "/dev/ttyXNORFLOW-missing" in err[0] and "cannot open" in err[0]


def test_compare_golden_board_bit_exact(digits_model, tmp_path, capsys):
    """``compare --backends golden,board``: every hidden bit the board can show, every score
    and class equal to golden; the cycles are the board's own count."""
    folder, model, target = digits_model
    report = tmp_path / "report"
    with PtyBoard(target, digits(6), cycles_per_image=777) as board:
        rc = main(["compare", "--model", str(folder), "--backends", "golden,board",
                   "--port", board.port, "--dataset", "digits", "--limit", "6",
                   "-o", str(report)])
    out = capsys.readouterr().out
    assert board.failure is None
    assert rc == 0, out
    assert "6/6 samples bit-exact vs golden" in out and "all 2 backends bit-exact" in out
    doc = json.loads((report / "report.json").read_text())
    agree = doc["agreement"]["board"]
    readable = program.readable_layers(
        program.decode_program(backends.load_model(folder).memories[0].words)[1])
    hidden = [layer for layer in model.layers if layer.output == "threshold"]
    want_bits = sum(6 * layer.out_h * layer.out_w * layer.out_c
                    for layer, ok in zip(hidden, readable, strict=True) if ok)
    assert want_bits > 0 and agree["bits_compared"] == want_bits
    assert agree["scores_compared"] == 6 * model.layers[-1].out_c
    assert doc["performance"]["board"]["cycles_per_image"] == 777


def test_board_backend_batches_equal_golden(digits_model):
    """``batch`` images per START: the scores memory and the batched hidden maps read back
    over the tty."""
    folder, model, target = digits_model
    mf = backends.load_model(folder)
    px = digits(5)
    with PtyBoard(target, px) as board:
        out = backends.run(mf, px, "board", port=board.port, batch=2, progress=False)
    assert board.failure is None
    assert out.info["images_per_start"] == 2  # the program's max_batch allows 2 (R = 2)
    gold = golden.run(model, px, width=target.width)
    assert out.predictions.tolist() == gold.predictions.tolist()
    assert out.scores.tolist() == gold.scores.tolist()
    checked = 0
    for a, g in zip(out.activations, gold.activations, strict=True):
        if a is not None:
            assert np.array_equal(a, g)
            checked += 1
    assert checked == sum(program.readable_layers(
        program.decode_program(mf.memories[0].words)[1]))


def test_compare_reports_a_board_that_disagrees(digits_model, tmp_path, capsys):
    """A board that answers a wrong score is a mismatch (exit 1), not a pass."""
    folder, _, target = digits_model

    with PtyBoard(target, digits(2), corrupt_score=True) as board:
        rc = main(["compare", "--model", str(folder), "--backends", "golden,board",
                   "--port", board.port, "--dataset", "digits", "--limit", "2",
                   "-o", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert rc == 1
    assert "MISMATCH: backend board vs golden" in out and "samples bit-exact" in out


def test_run_board_backend(digits_model, capsys):
    folder, _, target = digits_model
    with PtyBoard(target, digits(3), cycles_per_image=500) as board:
        rc = main(["run", "--model", str(folder), "--backend", "board", "--port", board.port,
                   "--limit", "3"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "board: digits test: 3 images" in out and "500.0 cycles/image" in out


@pytest.mark.parametrize("argv, words", [
    (["compare", "--backends", "golden,board", "--port", "/dev/ttyXNORFLOW-missing"],
     ["/dev/ttyXNORFLOW-missing", "cannot open"]),
    (["compare", "--backends", "golden,board"], ["board", "--port"]),
    (["run", "--backend", "board"], ["board", "--port"]),
    (["run", "--backend", "board", "--port", "/dev/ttyXNORFLOW-missing", "--baud", "0"],
     ["--baud", "0"]),
])
def test_board_backend_bad_port_is_one_line(digits_model, tmp_path, capsys, argv, words):
    folder, _, _ = digits_model
    rc = main(argv + ["--model", str(folder), "--limit", "2", *(
        ["-o", str(tmp_path / "r")] if argv[0] == "compare" else [])])
    cap = capsys.readouterr()
    err = cap.err.strip().splitlines()
    assert rc == 2, cap.out
    assert len(err) == 1 and all(w in err[0] for w in words), err
    assert not (tmp_path / "r").exists()


def test_link_model_counts_the_bytes_on_the_wire(digits_model):
    """The driver's stream (``classify_stream``) moves exactly the frames the link model
    counts, measured on the pty: per run one WRITE, one START, the READs answered BUSY and
    the READ of the scores; STATUS polls in the first run only. The synthesis report's
    images/s over the link is the link model's."""
    import asyncio

    from xnorflow.hw.link import throughput as tp
    from xnorflow.sw.images import load_model_folder
    from xnorflow.sw.perf import predict_network_cycles, program_cycles
    from xnorflow.synth.report import predicted_rates

    folder, model, target = digits_model
    _, _, memories = load_model_folder(folder)
    header, _ = program.decode_program(memories[0].words)
    n = 2 * header["max_batch"] + 1
    px = digits(n)
    gold = golden.run(model, px, width=target.width)
    log, runs = [], []

    class Counting(link.SerialTransport):
        async def write(self, data):
            log.append([link.Command(data[1]).name, len(data), 0])
            await super().write(data)

        async def read(self, k):
            got = await super().read(k)
            log[-1][2] += len(got)
            return got

    async def go(port):
        drv = link.AcceleratorDriver(port)
        await drv.connect()
        await drv.load(memories)
        log.clear()
        return await drv.classify_stream(px, on_run=lambda k, busy: runs.append((k, busy)))

    with PtyBoard(target, px, busy_polls=2) as board, Counting(board.port, timeout=5) as port:
        res = asyncio.run(go(port))
    assert [c for c, _ in res] == gold.predictions.tolist()
    assert [s for _, s in res] == gold.scores.tolist()
    ib, sb = tp.image_bytes(header, target)
    status = ["STATUS", tp.REQUEST_BYTES, tp.RESPONSE_BYTES + link.STATUS_LEN]
    expect = []
    for j, (k, busy) in enumerate(runs):
        frames = [[c.split()[0], a, b] for c, a, b in tp.stream_frames(k, ib, sb, busy)]
        expect += frames[:2] + [status] * 3 + frames[2:] if j == 0 else frames
    assert runs == [(2, 0), (2, 2), (1, 2)] and log == expect
    rates = predicted_rates(model, target, 48e6, 1_000_000, 24e6)
    run = program_cycles(memories, target, batch=header["max_batch"])
    want = tp.link_rate(1_000_000, 24e6, header["max_batch"], ib, sb, run)
    assert rates["images_per_s_link"] == pytest.approx(want.images_per_s)
    assert rates["link"]["bytes_per_run"] == want.bytes_per_run
    assert rates["cycles_per_image"] == predict_network_cycles(model, target)
    assert rates["images_per_s_compute"] == pytest.approx(48e6 / rates["cycles_per_image"])


def test_board_of_another_geometry_is_one_line(digits_model, tmp_path, capsys):
    """A board built for another geometry is refused before anything is loaded."""
    folder, _, _ = digits_model
    with PtyBoard(synthetic.geometry_target(4, 2, 16), digits(2)) as board:
        rc = main(["compare", "--model", str(folder), "--backends", "golden,board",
                   "--port", board.port, "--limit", "2", "-o", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and "compiled for 2x2x16" in err[0] and "is 4x2x16" in err[0], err
    assert board.frames == 1 and not board.mem["program"]  # READ_STATUS only
