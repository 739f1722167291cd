"""cocotb tests of the whole accelerator (generated Verilog) through the host driver.

The host driver (:class:`xnorflow.hw.link.driver.AcceleratorDriver`, via
:class:`xnorflow.hw.link.session.HostSession`) talks to the design over
:class:`~xnorflow.hw.link.transports.CocotbStreamTransport`: a :class:`StreamDriver` on
``host_in`` and a :class:`StreamMonitor` on ``host_out`` with seeded random idle cycles and
backpressure.
Results are checked by a :class:`NetworkScoreboard` against the golden model.

Environment (set by the pytest launchers and :func:`xnorflow.sim.backends.run_rtl`):

* ``XNORFLOW_JOB``: a ``job.json`` for :func:`run_job` (model folder, inputs ``.npy``,
  outputs ``.npz``, seed, idle, backpressure);
* ``XNORFLOW_TB_MODEL`` and ``XNORFLOW_TB_IMAGES``: model folder and images for the
  scoreboard tests.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from xnorflow.hw.link.transports import CocotbStreamTransport
from xnorflow.sim.backends import collect, load_model, open_session
from xnorflow.sim.tb.scoreboard import NetworkScoreboard
from xnorflow.sim.tb.streams import (
    StreamDriver,
    StreamMonitor,
    StreamPair,
    reset_during_traffic,
)
from xnorflow.sw import golden


def _seeded(dut, salt: str, base: int | None = None) -> random.Random:
    base = cocotb.RANDOM_SEED if base is None else base
    seed = (int(base) * 1000003 + sum(map(ord, salt))) & 0xFFFFFFFF
    dut._log.info("accelerator test %s: seed %d (COCOTB_RANDOM_SEED=%d)", salt, seed,
                  cocotb.RANDOM_SEED)
    return random.Random(seed)


async def _reset(dut, cycles: int = 4) -> None:
    dut.rst.value = 1
    await ClockCycles(dut.clk, cycles)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


async def _bench(dut, idle: float, backpressure: float, rng: random.Random):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.abort.value = 0
    drv = StreamDriver(dut, "host_in", dut.clk, idle, rng)
    mon = StreamMonitor(dut, "host_out", dut.clk, backpressure, rng)
    pair = StreamPair(drv, mon)
    await _reset(dut)  # outputs are X until the first reset edge
    cocotb.start_soon(pair.run())
    return CocotbStreamTransport(drv, mon), pair


def _tb_inputs():
    mf = load_model(os.environ["XNORFLOW_TB_MODEL"])
    px = np.load(os.environ["XNORFLOW_TB_IMAGES"])
    return mf, px, golden.run(mf.model, px)


def _should_stop(job: dict) -> bool:
    """A long job ends early (keeping the images done) at its deadline or on a stop file."""
    deadline = job.get("deadline")
    if deadline and time.time() > deadline:
        return True
    return os.path.exists(os.path.join(os.path.dirname(os.environ["XNORFLOW_JOB"]), "stop"))


@cocotb.test()
async def run_job(dut):
    """The RTL backends' entry point: classify every image of every job item, save outputs.

    ``job.json`` holds ``items`` (model folder, inputs ``.npy``, outputs ``.npz``), all for
    one target; several models share one simulator launch (the host reloads the memories).
    An item's ``batch`` (default 1) images go in one START, at most the program's ``max_batch``
    (:meth:`HostSession.infer_batch`). At ``deadline`` (UNIX time) or when a file ``stop``
    appears beside ``job.json`` the job ends after the current START; outputs then hold the
    images done.
    """
    from pathlib import Path

    with open(os.environ["XNORFLOW_JOB"]) as f:
        job = json.load(f)
    rng = _seeded(dut, "job", job.get("seed", 0))
    link, pair = await _bench(dut, job.get("idle", 0.0), job.get("backpressure", 0.0), rng)
    show = job.get("progress", False)
    t0 = time.perf_counter()
    done = 0
    total = sum(int(np.load(it["inputs"], mmap_mode="r").shape[0]) for it in job["items"])
    for item in job["items"]:
        mf = load_model(item["model_dir"])
        px = np.load(item["inputs"])
        start_cycles = pair.cycles
        t_item = time.perf_counter()
        session = await open_session(link, mf)
        load_cycles = pair.cycles - start_cycles
        step = max(1, min(int(item.get("batch", 1)), session.max_batch))
        results = []
        for i in range(0, len(px), step):
            if _should_stop(job):
                break
            batch = await session.infer_batch(px[i:i + step])
            results += batch
            every = max(1, total // 20)
            if show and (done + len(batch)) // every > done // every:
                rate = (done + len(batch)) / (time.perf_counter() - t0)
                print(f"{job['backend']}: {done + len(batch)}/{total} images, "
                      f"{rate:.2f} images/s", file=sys.stderr, flush=True)
            done += len(batch)
        if not results:
            break
        out = collect(mf.model, results, job["backend"])
        out.sim_cycles = pair.cycles - start_cycles
        # wall time of this item inside the simulator (no simulator start-up or imports):
        # the basis of a simulator's cycles per second
        out.info = {"seed": job.get("seed", 0), "idle": job.get("idle", 0.0),
                    "backpressure": job.get("backpressure", 0.0),
                    "loop_s": time.perf_counter() - t_item, "images_per_start": step,
                    "load_cycles": load_cycles}
        out.save(Path(item["outputs"]))


@cocotb.test(timeout_time=200, timeout_unit="ms")
@cocotb.parametrize(stalls=[(0.0, 0.0), (0.5, 0.0), (0.0, 0.7), (0.4, 0.6)])
async def scoreboard(dut, stalls):
    """Images under random idle/backpressure, every hidden bit and score vs golden."""
    idle, backpressure = stalls
    rng = _seeded(dut, f"scoreboard-{idle}-{backpressure}")
    mf, px, ref = _tb_inputs()
    link, _ = await _bench(dut, idle, backpressure, rng)
    session = await open_session(link, mf)
    sb = NetworkScoreboard(mf.model, ref)
    order = list(range(len(px)))
    rng.shuffle(order)
    for i in order[:2]:
        r = await session.infer(px[i])
        sb.check(i, r.hidden, r.scores, r.prediction)
        assert r.cycles > 0
    sb.assert_clean()
    assert sb.checked == min(2, len(px))


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def reset_mid_network(dut):
    """Reset while a network runs; after reloading, the next networks must be exact."""
    rng = _seeded(dut, "reset")
    mf, px, ref = _tb_inputs()
    link, pair = await _bench(dut, 0.2, 0.3, rng)
    session = await open_session(link, mf)
    # first image normally: measures how long a network takes
    r0 = await session.infer(px[0])
    sb = NetworkScoreboard(mf.model, ref)
    sb.check(0, r0.hidden, r0.scores, r0.prediction)
    # second image: start it, then pull reset somewhere inside the run
    await session.driver.write_input(px[1 % len(px)])
    await session.driver.start()
    await ClockCycles(dut.clk, rng.randrange(1, max(2, r0.cycles - 1)))
    await reset_during_traffic(dut, link, 3)
    session = await open_session(link, mf)
    for i in range(1, min(len(px), 3)):
        r = await session.infer(px[i])
        sb.check(i, r.hidden, r.scores, r.prediction)
    sb.assert_clean()
