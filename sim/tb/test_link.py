"""cocotb: images/s over the UART link, measured on a board top (UART bridge + accelerator,
:class:`xnorflow.hw.boards.BoardTop`) driven through its pins by the real host driver
(:meth:`~xnorflow.hw.link.AcceleratorDriver.classify_stream` over
:class:`~xnorflow.hw.link.CocotbUartTransport`, cocotbext-uart's UART model).

The accelerator holds the model from the start (its memories are built with the images: the
load is not what is timed). The launcher (``benchmarks/link.py``, ``tests/sim/test_link.py``)
passes in the environment:

* ``LINK_MODEL``: a compiled model folder; ``LINK_DIVISOR``: clock cycles per bit (that of
  the Verilog);
* ``LINK_CASES``: JSON ``[[batch, runs, seed], ...]``: ``runs`` runs of ``batch`` random
  images each, streamed by one ``classify_stream`` call;
* ``LINK_OUT``: the JSON file this writes: per case, per run, its images, the READs answered
  BUSY and the cycles from the run's first request bit to the host having its scores; the
  accelerator's cycle count of the first run; whether every score and class equals the
  golden model's.

The clock period is 10 ns and the UART model's bit time ``10 * LINK_DIVISOR`` ns, so the
host and the gateware run the same baud rate exactly and every time is a whole number of
cycles: the launcher converts cycles to seconds at the board's clock.
"""

import json
import os

import cocotb
from cocotb.utils import get_sim_time

from xnorflow.sim.tb.board import start_board_top

CLK_NS = 10


@cocotb.test()
async def link_throughput(dut):
    """Every case's runs, timed, checked against the golden model."""
    import numpy as np

    from xnorflow.hw.link import CocotbUartTransport, HostSession
    from xnorflow.sw import golden, synthetic
    from xnorflow.sw.images import load_model_folder, target_from_record

    divisor = int(os.environ["LINK_DIVISOR"])
    manifest, model, memories = load_model_folder(os.environ["LINK_MODEL"])
    target = target_from_record(manifest["target"])
    bit_ns = CLK_NS * divisor
    baud = 1e9 / bit_ns
    assert int(1e9 / baud) == bit_ns and int(1e9 / baud / 2) * 2 == bit_ns, baud

    await start_board_top(dut, CLK_NS)

    link = CocotbUartTransport(dut.uart_rx, dut.uart_tx, baud, read_timeout_ns=10**9)
    session = await HostSession.open(link, model, memories, target, load=False,
                                     read_hidden=False)
    out = {"divisor": divisor, "clock_ns": CLK_NS, "cases": []}
    for batch, runs, seed in json.loads(os.environ["LINK_CASES"]):
        px = synthetic.random_images(batch * runs, model.in_h, model.in_w, model.in_c,
                                     seed=seed)
        gold = golden.run(model, px, width=target.width)
        marks = []

        def mark(k, busy, marks=marks):
            marks.append((k, busy, get_sim_time("ns")))

        t0 = get_sim_time("ns")
        res = await session.classify_stream(px, batch, mark)
        exact = ([c for c, _ in res] == gold.predictions.tolist()
                 and [s for _, s in res] == np.asarray(gold.scores).tolist())
        first_cycles = session.driver.status_cache.cycles
        times = [t0] + [t for _, _, t in marks]
        out["cases"].append({
            "batch": batch, "seed": seed, "exact": exact, "first_run_cycles": first_cycles,
            "runs": [{"images": k, "busy_reads": busy,
                      "cycles": round((times[i + 1] - times[i]) / CLK_NS)}
                     for i, (k, busy, _) in enumerate(marks)],
        })
        assert exact, f"batch {batch}: the link's scores differ from the golden model's"
    with open(os.environ["LINK_OUT"], "w") as f:
        json.dump(out, f, indent=1)
