"""xnorflow: binary neural networks from PyTorch to an open-toolchain FPGA bitstream.

Subpackages (one distribution, see ``pyproject.toml``):

- :mod:`xnorflow.sw` -- encoding contract, golden model, kernels, training, compiler (``sw/``)
- :mod:`xnorflow.hw` -- Amaranth gateware of the accelerator (``hw/``)
- :mod:`xnorflow.sim` -- Verilog generation, cocotb testbenches, RTL backends (``sim/``)
"""

__version__ = "0.1.0"
