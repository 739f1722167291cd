"""Synthesis: board tops -> bitstreams with the open toolchain, their reports, BRAM swaps.

* :mod:`~xnorflow.synth.tools`: finding and running the YoWASP tools;
* :mod:`~xnorflow.synth.build`: :func:`synthesize` one board x geometry;
* :mod:`~xnorflow.synth.report`: log parsing, ``report.json`` / ``report.md``;
* :mod:`~xnorflow.synth.swap`: a compiled model into an existing bitstream (icebram/ecpbram).

The boards themselves are described in :mod:`xnorflow.sw.boards`, their gateware in
:mod:`xnorflow.hw.boards`; ``docs/synthesis.md`` has the whole flow.
"""

from .build import SynthConfig, synthesize
from .swap import swap_model
from .tools import SynthError, tool_env

__all__ = ["SynthConfig", "SynthError", "swap_model", "synthesize", "tool_env"]
