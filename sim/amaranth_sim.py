"""The ``amaranth`` backend: the Accelerator in Amaranth's simulator, driven by the host
link's session over :class:`~xnorflow.hw.link.AmaranthStreamTransport` (seeded random idle
cycles on ``host_in`` and backpressure on ``host_out``, the same stall model as the cocotb
:mod:`xnorflow.sim.tb.streams`, and a count of simulated cycles).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np


def run_amaranth(mf, px: np.ndarray, *, waves: Path | None = None, seed: int = 0,
                 idle: float = 0.0, backpressure: float = 0.0, progress: bool = True,
                 batch: int = 1):
    """Simulate ``px`` through ``Accelerator(mf.target)`` and return ``Outputs``;
    ``batch`` images per START (at most the program's ``max_batch``)."""
    from amaranth.sim import Simulator
    from tqdm import tqdm

    from xnorflow.hw.link import AmaranthStreamTransport

    from .backends import collect, open_session
    from .rtl import accelerator_for

    dut = accelerator_for(mf.target, [mf.memories])
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    results = []
    state: dict = {}

    async def tb(ctx):
        transport = AmaranthStreamTransport(ctx, dut, idle, backpressure, random.Random(seed))
        state["transport"] = transport
        session = await open_session(transport, mf)
        state["step"] = session.images_per_start(batch)
        with tqdm(total=len(px), desc="amaranth", unit="img", disable=not progress,
                  leave=False) as bar:
            results.extend(await session.infer_all(px, batch, bar.update))

    sim.add_testbench(tb)
    t0 = time.perf_counter()
    if waves is not None:
        with sim.write_vcd(str(waves)):
            sim.run()
    else:
        sim.run()
    wall = time.perf_counter() - t0
    out = collect(mf.model, results, "amaranth")
    out.wall_s = wall
    out.sim_cycles = state["transport"].cycles
    out.waves = waves
    out.info = {"seed": seed, "idle": idle, "backpressure": backpressure, "sim_s": wall,
                "images_per_start": state["step"]}
    return out
