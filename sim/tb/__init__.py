"""cocotb 2 testbench components (drivers, monitors, scoreboard, host transport) and modules.

Modules named ``test_*`` are cocotb test modules: they run inside the simulator, launched by
:func:`xnorflow.sim.runner.run_cocotb`. The other modules are plain classes they share.
"""
