"""Differential tests: random networks through golden, cpu, amaranth and icarus, bit-exact.

Seeded differently on every run; the seed is printed (and shown on failure). Repeat a run
with ``XNORFLOW_DIFF_SEED=<seed>``. The >= 1000-layer version is ``benchmarks/rtl.py``.
"""

from __future__ import annotations

import dataclasses
import os
import random

import pytest

from xnorflow.sim import backends
from xnorflow.sim.compare import agreement
from xnorflow.sw import program, synthetic
from xnorflow.sw.targets import sim_target

pytestmark = pytest.mark.toolchain

N_NETWORKS = 2
IMAGES = 1


def _base_seed() -> int:
    env = os.environ.get("XNORFLOW_DIFF_SEED")
    return int(env) if env else random.SystemRandom().randrange(1 << 30)


def test_random_networks_all_backends(tmp_path):
    base = _base_seed()
    print(f"differential seed {base} (XNORFLOW_DIFF_SEED={base} repeats this run)")
    target = synthetic.random_target(base)  # a random geometry, mem_regs 0 or 1
    geometry = (target.geometry, target.mem_regs)
    items = []
    for k in range(N_NETWORKS):
        seed = base + k
        model = synthetic.random_network(seed, max_hw=5, max_c=24, max_out_c=12)
        folder = tmp_path / f"net{k}"
        synthetic.write_folder(model, target, folder)
        items.append((backends.load_model(folder), synthetic.random_pixels(seed, model, IMAGES)))
    rtl_outs = backends.run_rtl_batch("icarus", items, seed=base, idle=0.2, backpressure=0.2,
                                      progress=False)
    layers = 0
    for (mf, px), icarus in zip(items, rtl_outs, strict=True):
        ref = backends.run(mf, px, "golden")
        outs = [backends.run(mf, px, "cpu"), backends.run(mf, px, "amaranth", progress=False),
                icarus]
        for out in outs:
            a = agreement(mf.model, ref, out)
            assert a.exact, (f"seed {base}, geometry {geometry}, {mf.path.name}, "
                             f"backend {out.backend}: {a.first}")
        layers += len(mf.model.layers)
    assert layers >= 2 * N_NETWORKS


def test_spread_conv_layers_in_verilog(tmp_path):
    """Conv layers whose column groups the compiler spreads over the rows (a tile per output
    pixel, ``program.mapping``) on a target with a weight word per row and ``mem_regs = 2``,
    in the generated Verilog on Icarus under random stalls: a pooled, padded layer (each row
    its own threshold word and pooling op through the 4 pooling passes) and an unpooled one,
    then a split dense layer, == golden and the CPU kernel, every hidden bit."""
    model = synthetic.random_cnn(in_shape=(6, 6, 1), convs=((8, 3, 1, 1, 2), (8, 3, 1, 1, 1)),
                                 dense=(10,), in_bits=2, seed=4)
    target = dataclasses.replace(sim_target(4, 2, 16, name="sim-4x2x16-r2-w4", weight_rows=4),
                                 mem_regs=2)  # named as synthetic.random_target names it
    folder = tmp_path / "net"
    synthetic.write_folder(model, target, folder, max_batch=1)
    mf = backends.load_model(folder)
    descs = program.decode_memories(mf.memories)[1]
    assert [(d["ospread"], d["ksplit"], d["passes"]) for d in descs] == [
        (1, 0, 4), (1, 0, 1), (0, 1, 1)]
    px = synthetic.random_pixels(4, model, 3)
    (icarus,) = backends.run_rtl_batch("icarus", [(mf, px)], seed=4, idle=0.2,
                                       backpressure=0.2, progress=False)
    ref = backends.run(mf, px, "golden")
    for out in (backends.run(mf, px, "cpu"), icarus):
        a = agreement(mf.model, ref, out)
        assert a.exact, f"backend {out.backend}: {a.first}"
