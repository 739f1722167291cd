"""A tiny byte-stream component with the accelerator's host-port shape, for testbench tests.

It lets the stream driver, monitor, backpressure, abort and reset machinery be tested without
the full accelerator (and much faster): every input byte ``b`` comes out as
:func:`transform` ``(b)`` through a small FIFO.
"""


from amaranth import Module, ResetInserter
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out


def transform(b: int) -> int:
    """What :class:`ByteTransform` does to each byte: ``(5 * b + 3) mod 256``."""
    return (5 * b + 3) & 0xFF


class ByteTransform(wiring.Component):
    """Bytes in, transformed bytes out, in order, through a ``depth``-entry FIFO.

    Members
    -------
    host_in : ``In(stream.Signature(8))``
    host_out : ``Out(stream.Signature(8))``
    abort : ``In(1)``
        Empties the FIFO (like the accelerator's abort).

    Latency two cycles from an input transfer to ``host_out.valid``; throughput one byte per
    cycle when the sink is always ready.
    """

    host_in: In(stream.Signature(8))
    host_out: Out(stream.Signature(8))
    abort: In(1)

    def __init__(self, depth: int = 4):
        if depth < 2:
            raise ValueError(f"depth must be at least 2, not {depth}")
        self.depth = depth
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        q = ResetInserter(self.abort)(fifo.SyncFIFOBuffered(width=8, depth=self.depth))
        m.submodules.fifo = q
        m.d.comb += [
            q.w_data.eq((self.host_in.payload * 5 + 3)[:8]),
            q.w_en.eq(self.host_in.valid),
            self.host_in.ready.eq(q.w_rdy),
            self.host_out.payload.eq(q.r_data),
            self.host_out.valid.eq(q.r_rdy),
            q.r_en.eq(self.host_out.ready),
        ]
        return m
