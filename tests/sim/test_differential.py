"""Differential tests: random networks through golden, cpu, amaranth and icarus, bit-exact.

Seeded differently on every run; the seed is printed (and shown on failure). Repeat a run
with ``XNORFLOW_DIFF_SEED=<seed>``. The >= 1000-layer version is ``benchmarks/rtl.py``.
"""

from __future__ import annotations

import os
import random

import pytest

from xnorflow.sim import backends
from xnorflow.sim.compare import agreement
from xnorflow.sw import synthetic

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
