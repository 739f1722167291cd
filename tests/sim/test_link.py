"""The link model (``hw/link/throughput.py``) against a simulation of the real UART gateware
and driver (``sim/link.py``, ``sim/tb/test_link.py`` on Icarus): a small model on a board top,
at two divisors, one and two images per run; every steady run takes exactly the model's
cycles, and every score equals the golden model's. The digits MLP on ``up5k``:
``benchmarks/link.py``."""

import pytest

from xnorflow.hw.link import throughput as tp
from xnorflow.sim.link import model_cycles, simulate_link
from xnorflow.sw import program, synthetic
from xnorflow.sw.perf import program_cycles

pytestmark = pytest.mark.toolchain


@pytest.mark.parametrize("divisor", [4, 9])
def test_simulated_link_equals_the_model(tmp_path, divisor):
    model = synthetic.random_mlp(sizes=(64, 32, 10), in_shape=(8, 8, 1), in_bits=8, seed=6)
    target = synthetic.geometry_target(2, 2, 16)
    synthetic.write_folder(model, target, tmp_path / "m")
    mems = program.build_memories(model, target)
    header, _ = program.decode_program(mems[0].words)
    sizes = tp.image_bytes(header, target)
    doc = simulate_link(tmp_path / "m", divisor, [(1, 3, 1), (2, 3, 2)])
    busy = set()
    for case in doc["cases"]:
        assert case["exact"]
        run = program_cycles(mems, target, batch=case["batch"])
        assert case["first_run_cycles"] == run  # the accelerator's own count
        rate, cycles = model_cycles(divisor, case["batch"], *sizes, run)
        for r in case["runs"][1:]:  # the first run waits with STATUS
            assert (r["busy_reads"], r["cycles"]) == (rate.busy_reads, cycles)
            busy.add(r["busy_reads"])
    # the divisors are chosen so that the run hides behind BUSY READs at one and not the other
    assert busy == ({1} if divisor == 4 else {0})
