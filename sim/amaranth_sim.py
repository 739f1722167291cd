"""The ``amaranth`` backend: HW2's Accelerator in Amaranth's simulator, driven by HW2's driver.

:class:`StallingTransport` is the driver's transport over an Amaranth testbench context,
with seeded random idle cycles on ``host_in`` and backpressure on ``host_out`` (the same
stall model as the cocotb :mod:`xnorflow.sim.tb.streams`), and a count of simulated cycles.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np


class StallingTransport:
    """``async write(bytes)`` / ``async read(n)`` over ``dut.host_in`` / ``dut.host_out``.

    Transfers are decided from values sampled at the clock edge
    (``ctx.tick().sample(...)``), so a byte counts as sent exactly when ``valid`` and
    ``ready`` were both high at the edge.
    """

    def __init__(self, ctx, dut, idle: float = 0.0, backpressure: float = 0.0,
                 rng: random.Random | None = None, timeout: int = 50_000_000):
        self.ctx, self.dut = ctx, dut
        self.idle, self.backpressure = idle, backpressure
        self.rng = rng or random.Random(0)
        self.timeout = timeout
        self.cycles = 0

    async def _tick(self, *sample):
        self.cycles += 1
        _, _, *values = await self.ctx.tick().sample(*sample)
        return values

    async def write(self, data: bytes) -> None:
        ctx, port = self.ctx, self.dut.host_in
        for b in data:
            while self.idle and self.rng.random() < self.idle:
                ctx.set(port.valid, 0)
                await self._tick()
            ctx.set(port.payload, int(b))
            ctx.set(port.valid, 1)
            for _ in range(self.timeout):
                (ready,) = await self._tick(port.ready)
                if ready:
                    break
            else:
                raise TimeoutError("host_in never became ready")
        ctx.set(port.valid, 0)

    async def read(self, n: int) -> bytes:
        ctx, port = self.ctx, self.dut.host_out
        out = bytearray()
        waited = 0
        while len(out) < n:
            ready = 0 if (self.backpressure and self.rng.random() < self.backpressure) else 1
            ctx.set(port.ready, ready)
            valid, payload = await self._tick(port.valid, port.payload)
            if ready and valid:
                out.append(int(payload))
            waited += 1
            if waited > self.timeout:
                raise TimeoutError(f"host_out gave {len(out)} of {n} bytes")
        ctx.set(port.ready, 0)
        return bytes(out)


def run_amaranth(mf, px: np.ndarray, *, waves: Path | None = None, seed: int = 0,
                 idle: float = 0.0, backpressure: float = 0.0, progress: bool = True,
                 batch: int = 1):
    """Simulate ``px`` through ``Accelerator(mf.target)`` and return ``Outputs``;
    ``batch`` images per START (at most the program's ``max_batch``)."""
    from amaranth.sim import Simulator
    from tqdm import tqdm

    from .host import HostSession, collect
    from .rtl import accelerator_for

    dut = accelerator_for(mf.target, [mf.memories])
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    results = []
    state: dict = {}

    async def tb(ctx):
        transport = StallingTransport(ctx, dut, idle, backpressure, random.Random(seed))
        state["transport"] = transport
        session = await HostSession.open(transport, mf)
        step = state["step"] = max(1, min(batch, session.max_batch))
        with tqdm(total=len(px), desc="amaranth", unit="img", disable=not progress,
                  leave=False) as bar:
            for i in range(0, len(px), step):
                results.extend(await session.infer_batch(px[i:i + step]))
                bar.update(len(px[i:i + step]))

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
