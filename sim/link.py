"""Images/s over the UART link in simulation: the board top (the real
:class:`~xnorflow.hw.uart.UARTBridge` and accelerator, :class:`~xnorflow.hw.boards.BoardTop`)
with a model's memories built in, driven through its pins by the real host driver
(``sim/tb/test_link.py``), and the same runs predicted by the link model
(:func:`xnorflow.hw.link.throughput.link_rate`).

Used by ``benchmarks/link.py`` (the digits MLP on ``up5k``) and ``tests/sim/test_link.py``.
Times are in clock cycles: the simulation runs the host's UART at exactly ``divisor``
cycles per bit, so a board's figure is the cycle count divided by its clock.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

from .rtl import generate, target_params
from .runner import run_cocotb

__all__ = ["board_top_verilog", "simulate_link", "model_cycles"]


def board_top_verilog(target, memories, divisor: int, timeout: int):
    """Verilog of a board top with the accelerator holding ``memories`` (cached by their
    contents, the divisor and the timeout)."""
    digest = hashlib.sha256()
    for m in memories:
        digest.update(m.name.encode() + str(m.width).encode())
        digest.update(",".join(str(int(w)) for w in m.words).encode())
    params = {**target_params(target), "divisor": divisor, "timeout": timeout,
              "core": "accelerator", "memories_sha256": digest.hexdigest()}

    def build():
        from xnorflow.hw.accelerator import Accelerator
        from xnorflow.hw.boards import BoardTop

        return BoardTop(Accelerator(target, list(memories)), divisor=divisor, timeout=timeout)

    return generate(f"link_{target.geometry}_d{divisor}", build, params)


def simulate_link(folder, divisor: int, cases, *, sim: str = "icarus",
                  timeout: int | None = None) -> dict:
    """Run ``cases`` (``[(batch, runs, seed), ...]``) of the model folder ``folder`` over the
    UART at ``divisor`` cycles per bit; returns ``sim/tb/test_link.py``'s record plus the
    simulator's build and run seconds. ``timeout``: the bridge's inter-byte timeout in cycles
    (default: the board tops' ``DEFAULT_TIMEOUT_S`` at the default clock of the target's
    board, the iCEBreaker's for a target of no board)."""
    from xnorflow.hw.boards import DEFAULT_TIMEOUT_S
    from xnorflow.hw.link.throughput import board_clock
    from xnorflow.sw.boards import BOARDS
    from xnorflow.sw.errors import UserError
    from xnorflow.sw.images import load_model_folder, target_from_record

    manifest, _, memories = load_model_folder(folder)
    target = target_from_record(manifest["target"])
    if not timeout:
        board = BOARDS[target.board or "icebreaker"]
        timeout = round(DEFAULT_TIMEOUT_S * board_clock(board))
    rtl = board_top_verilog(target, memories, divisor, timeout)
    with tempfile.TemporaryDirectory(prefix="xnorflow-link-") as tmp:
        out = Path(tmp) / "link.json"
        run = run_cocotb(sim, rtl, "xnorflow.sim.tb.test_link", quiet=True, extra_env={
            "LINK_MODEL": str(Path(folder).resolve()), "LINK_DIVISOR": str(divisor),
            "LINK_CASES": json.dumps([list(c) for c in cases]),
            "LINK_OUT": str(out)})
        if run.failed or not out.is_file():
            raise UserError(f"link simulation failed ({run.failed} of {run.tests} tests; "
                            f"log in {run.test_dir})")
        doc = json.loads(out.read_text())
    doc.update(sim=sim, build_s=round(run.build_s, 1), run_s=round(run.test_s, 1))
    return doc


def model_cycles(divisor: int, batch: int, input_bytes: int, score_bytes: int,
                 run_cycles: int):
    """The link model's run of ``batch`` images at ``divisor`` cycles per bit, in cycles
    (clock 1 Hz): ``(LinkRate, cycles per run)``."""
    from xnorflow.hw.link.throughput import link_rate

    r = link_rate(1 / divisor, 1.0, batch, input_bytes, score_bytes, run_cycles)
    return r, r.seconds_per_run
