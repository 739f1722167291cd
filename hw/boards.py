"""Board tops: the accelerator behind a UART bridge, with a PLL-generated system clock.

The boards themselves (device, oscillator, default clock, target, platform) are described
in :mod:`xnorflow.sw.boards`; this module builds their gateware.

Two layers:

* :class:`BoardTop` is board-independent and simulatable: UART pins on one side
  (``uart_rx``, ``uart_tx``), a :class:`~xnorflow.hw.uart.UARTBridge` and a *core* (the
  accelerator, or any component with the same host interface) on the other. The cocotb tests
  drive its pins with a UART model.
* :class:`PlatformTop` wraps a :class:`BoardTop` for an ``amaranth-boards`` platform: it
  requests the clock and UART resources, makes the ``sync`` domain with the FPGA's PLL and
  holds it in reset until the PLL has locked.

A core has the accelerator's host interface (``docs/host-protocol.md``)::

    host_in:  In(stream.Signature(8))    # bytes from the host
    host_out: Out(stream.Signature(8))   # bytes to the host
    abort:    In(1)                      # return the frame decoder to idle

Clocking (see ``docs/synthesis.md``): every supported board has one crystal oscillator
(12 MHz on the iCE40 boards, 25 MHz on the ULX3S). :func:`ice40_pll` and :func:`ecp5_pll`
choose PLL dividers for the requested system clock (the same search as ``icepll`` and
``ecppll``); a request equal to the oscillator frequency bypasses the PLL. The iCE40 tops use
``SB_PLL40_PAD`` where the oscillator pin is the PLL's pad (iCEBreaker: pin 35 cannot also
feed a global buffer) and ``SB_PLL40_CORE`` fed from the oscillator's global buffer elsewhere
(HX8K breakout); the ECP5 top uses ``EHXPLLL`` with CLKOP feedback.
"""

from dataclasses import dataclass

from amaranth.hdl import ClockDomain, ClockSignal, Instance, Module, Signal
from amaranth.lib import io, stream, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

from ..sw.boards import SAFE_BAUD, Board
from ..sw.errors import require_extra
from .uart import UARTBridge, uart_divisor

__all__ = [
    "BoardTop",
    "DatapathCore",
    "EchoCore",
    "PLLParams",
    "PlatformTop",
    "board_pll",
    "ecp5_pll",
    "ice40_pll",
    "make_platform",
]

#: UART baud rate of a link whose board is not known (every board's bridge and top run it;
#: a board top's default is its board's ``default_baud``, :mod:`xnorflow.sw.boards`).
DEFAULT_BAUD = SAFE_BAUD
#: Default inter-byte timeout of the board tops, in seconds.
DEFAULT_TIMEOUT_S = 0.05


def make_platform(board: Board):
    """A fresh instance of ``board``'s ``amaranth-boards`` platform (the ``[synth]`` extra)."""
    module, cls = board.platform.split(":")
    return getattr(require_extra(f"amaranth_boards.{module}", "synth"), cls)()


@dataclass(frozen=True)
class PLLParams:
    """PLL settings: ``params`` go to the PLL primitive, ``freq`` is what they really give."""

    freq: float
    vco: float
    params: dict


def ice40_pll(f_in: float, f_out: float) -> PLLParams:
    """iCE40 ``SB_PLL40`` settings (simple feedback) closest to ``f_out``, as ``icepll`` picks.

    ``f_out = f_in * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ)`` with the phase detector at
    10-133 MHz, the VCO at 533-1066 MHz and the output at 16-275 MHz (data sheet limits).
    Raises ``ValueError`` if nothing lands within 1 %.
    """
    if not 16e6 <= f_out <= 275e6:
        raise ValueError(f"iCE40 PLL cannot make {f_out / 1e6:g} MHz (16-275 MHz)")
    best = None
    for divr in range(16):
        f_pfd = f_in / (divr + 1)
        if not 10e6 <= f_pfd <= 133e6:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not 533e6 <= f_vco <= 1066e6:
                continue
            for divq in range(1, 7):
                f = f_vco / (1 << divq)
                if best is None or abs(f - f_out) < abs(best[0] - f_out):
                    best = (f, f_vco, divr, divf, divq, f_pfd)
    if best is None or abs(best[0] - f_out) > 0.01 * f_out:
        raise ValueError(f"iCE40 PLL cannot make {f_out / 1e6:g} MHz from {f_in / 1e6:g} MHz")
    f, f_vco, divr, divf, divq, f_pfd = best
    mhz = f_pfd / 1e6
    filt = 1 if mhz < 17 else 2 if mhz < 26 else 3 if mhz < 44 else 4 if mhz < 66 else (
        5 if mhz < 101 else 6)
    return PLLParams(f, f_vco, {"FEEDBACK_PATH": "SIMPLE", "DIVR": divr, "DIVF": divf,
                                "DIVQ": divq, "FILTER_RANGE": filt})


def ecp5_pll(f_in: float, f_out: float) -> PLLParams:
    """ECP5 ``EHXPLLL`` settings (CLKOP feedback) closest to ``f_out``, as ``ecppll`` picks.

    ``f_out = f_in * CLKFB_DIV / CLKI_DIV`` with the VCO (``f_out * CLKOP_DIV``) at
    400-800 MHz (nearest 600 MHz) and the phase detector at >= 3.125 MHz. Raises
    ``ValueError`` beyond 5 % (the board top derives its UART divisor from the real clock).
    """
    best = None
    for idiv in range(1, 129):
        f_pfd = f_in / idiv
        if f_pfd < 3.125e6:
            break
        for fdiv in range(1, 81):
            f = f_pfd * fdiv
            odiv = max(1, min(128, round(600e6 / f)))  # VCO nearest the middle of its range
            vco = f * odiv
            if 400e6 <= vco <= 800e6 and (
                best is None or abs(f - f_out) < abs(best[0] - f_out) - 1e-3
            ):
                best = (f, vco, idiv, fdiv, odiv)
    if best is None or abs(best[0] - f_out) > 0.05 * f_out:
        raise ValueError(f"ECP5 PLL cannot make {f_out / 1e6:g} MHz from {f_in / 1e6:g} MHz")
    f, vco, idiv, fdiv, odiv = best
    return PLLParams(f, vco, {"CLKI_DIV": idiv, "CLKFB_DIV": fdiv, "CLKOP_DIV": odiv,
                              "CLKOP_CPHASE": (odiv - 1) // 2, "CLKOP_FPHASE": 0})


def board_pll(board: Board, freq: float | None = None) -> tuple[PLLParams | None, float]:
    """The PLL (None: the oscillator itself) and system clock in Hz of ``board``'s top when
    asked for ``freq`` (``board.default_freq`` if None); ``ValueError`` if the PLL cannot
    make it."""
    req = board.default_freq if freq is None else float(freq)
    if req == board.clock_freq:
        return None, req
    pll = (ice40_pll if board.family == "ice40" else ecp5_pll)(board.clock_freq, req)
    return pll, pll.freq


class EchoCore(wiring.Component):
    """A stand-in core for bring-up and tests: sends every received byte back.

    Members: the accelerator's host interface (``host_in``, ``host_out``, ``abort``; abort
    has nothing to reset). Latency: combinational (0 cycles); throughput one byte per cycle.
    """

    host_in: In(stream.Signature(8))
    host_out: Out(stream.Signature(8))
    abort: In(1)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [
            self.host_out.payload.eq(self.host_in.payload),
            self.host_out.valid.eq(self.host_in.valid),
            self.host_in.ready.eq(self.host_out.ready),
        ]
        return m


class DatapathCore(wiring.Component):
    """A stand-in core that puts any datapath block (e.g. the systolic array) behind the UART
    link, for synthesis before (or without) the whole accelerator.

    Every input bit of ``inner`` comes from one long shift register that each received byte
    shifts by 8; every output bit is XOR-folded into one registered byte, sent back for each
    received byte. Nothing is optimised away, and every input path starts at a flip-flop, as
    it would in the accelerator. Resource figures include the shift register (one FF per
    input bit) and the fold.

    Members: ``host_in``, ``host_out``, ``abort`` (the accelerator's host interface).
    Latency: one reply byte per request byte, one cycle after the fold settles.
    """

    host_in: In(stream.Signature(8))
    host_out: Out(stream.Signature(8))
    abort: In(1)

    def __init__(self, inner: wiring.Component):
        self.inner = inner
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = self.inner
        ins = [getattr(inner, n) for n, mem in inner.signature.members.items()
               if mem.is_port and mem.flow == In]
        outs = [getattr(inner, n) for n, mem in inner.signature.members.items()
                if mem.is_port and mem.flow == Out]
        from amaranth.hdl import Cat, Value

        width_in = sum(len(Value.cast(v)) for v in ins)
        shreg = Signal(max(8, width_in))
        pos = 0
        for v in ins:
            n = len(Value.cast(v))
            m.d.comb += Value.cast(v).eq(shreg[pos:pos + n])
            pos += n
        out_bits = Cat(*[Value.cast(v) for v in outs])
        fold = Signal(8)
        m.d.sync += fold.eq(Cat(*[
            _xor_reduce([out_bits[i] for i in range(j, len(out_bits), 8)]) for j in range(8)]))
        pending = Signal()
        m.d.comb += [self.host_in.ready.eq(~pending), self.host_out.valid.eq(pending),
                     self.host_out.payload.eq(fold)]
        with m.If(self.host_in.valid & self.host_in.ready):
            m.d.sync += [shreg.eq(Cat(self.host_in.payload, shreg[:-8])), pending.eq(1)]
        with m.If(self.host_out.valid & self.host_out.ready):
            m.d.sync += pending.eq(0)
        return m


def _xor_reduce(bits):
    from amaranth.hdl import Const

    acc = Const(0, 1)
    for b in bits:
        acc = acc ^ b
    return acc


class BoardTop(wiring.Component):
    """UART pins, :class:`~xnorflow.hw.uart.UARTBridge` and a core, in the ``sync`` domain.

    Parameters
    ----------
    core : wiring.Component
        The accelerator (or :class:`EchoCore`): ``host_in``, ``host_out``, ``abort``.
    divisor : int
        UART clock cycles per bit (``clk_freq / baud``, see :func:`uart_divisor`).
    timeout : int
        Inter-byte timeout in clock cycles (``abort`` after that long without a byte).

    Members
    -------
    uart_rx : In(1)
        From the host (idle high).
    uart_tx : Out(1)
        To the host (idle high).
    error : Out(1)
        High from a framing error, overrun or timeout until the next byte arrives (an LED).

    Latency and throughput: those of the bridge (line rate) plus the core's.
    """

    uart_rx: In(1, init=1)
    uart_tx: Out(1, init=1)
    error: Out(1)

    def __init__(self, core: wiring.Component, *, divisor: int, timeout: int):
        for name in ("host_in", "host_out", "abort"):
            if name not in core.signature.members:
                raise TypeError(f"core {core!r} has no {name!r} port (see docs/host-protocol.md)")
        self.core = core
        self.divisor = divisor
        self.timeout = timeout
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge = bridge = UARTBridge(self.divisor, self.timeout)
        m.submodules.core = core = self.core
        m.d.comb += [bridge.rx.eq(self.uart_rx), self.uart_tx.eq(bridge.tx),
                     core.abort.eq(bridge.abort)]
        wiring.connect(m, bridge.host_in, core.host_in)
        wiring.connect(m, core.host_out, bridge.host_out)
        with m.If(bridge.abort):
            m.d.sync += self.error.eq(1)
        with m.Elif(bridge.host_in.valid):
            m.d.sync += self.error.eq(0)
        return m


class PlatformTop(wiring.Component):
    """A :class:`BoardTop` on a real board: clock, PLL, reset and pins.

    Parameters
    ----------
    board : Board
        Which board (see :data:`xnorflow.sw.boards.BOARDS`).
    core : wiring.Component
        The core (the accelerator).
    freq : float
        Requested system clock in Hz (``board.default_freq`` if ``None``); the PLL gives
        :attr:`freq` (within 1 % on iCE40, 5 % on ECP5).
    baud : int
        UART baud rate (``board.default_baud`` if ``None``).
    timeout_s : float
        Inter-byte timeout in seconds.

    The top has no ports of its own (everything is a platform resource). ``sync`` is held in
    reset until the PLL locks (plus two cycles of reset synchronisation).
    """

    def __init__(self, board: Board, core: wiring.Component, *, freq: float | None = None,
                 baud: int | None = None, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.board = board
        self.pll, self.freq = board_pll(board, freq)
        self.baud = board.default_baud if baud is None else baud
        self.divisor = uart_divisor(self.freq, self.baud)
        self.timeout = max(20 * self.divisor, round(timeout_s * self.freq))
        self.top = BoardTop(core, divisor=self.divisor, timeout=self.timeout)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        board = self.board
        use_pad = self.pll is not None and board.family == "ice40" and board.pll_pad
        clk_port = platform.request(board.clock, 0, dir="-")
        if not use_pad:
            m.submodules.clk_buf = clk_in = io.Buffer("i", clk_port)
        m.domains.sync = ClockDomain("sync")
        clk = Signal()
        locked = Signal()
        m.d.comb += ClockSignal("sync").eq(clk)
        if self.pll is None:
            m.d.comb += [clk.eq(clk_in.i), locked.eq(1)]
        elif board.family == "ice40":
            ref = {"i_PACKAGEPIN": clk_port.io} if use_pad else {"i_REFERENCECLK": clk_in.i}
            m.submodules.pll = Instance(
                "SB_PLL40_PAD" if use_pad else "SB_PLL40_CORE",
                **{f"p_{k}": v for k, v in self.pll.params.items()},
                **ref,
                i_RESETB=1,
                i_BYPASS=0,
                o_PLLOUTGLOBAL=clk,
                o_LOCK=locked,
            )
        else:
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{board.clock_freq / 1e6:g}",
                a_FREQUENCY_PIN_CLKOP=f"{self.freq / 1e6:g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
                a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
                p_CLKOP_ENABLE="ENABLED", p_FEEDBK_PATH="CLKOP",
                **{f"p_{k}": v for k, v in self.pll.params.items()},
                i_RST=0, i_STDBY=0, i_CLKI=clk_in.i, o_CLKOP=clk, i_CLKFB=clk,
                i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1,
                i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0,
                o_LOCK=locked,
            )
        if self.pll is not None:
            platform.add_clock_constraint(clk, self.freq)
        m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")

        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx_buf = io.Buffer("o", uart.tx)
        # every supported board has an LED: the error light
        m.submodules.led_buf = led_buf = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.submodules.top = top = self.top
        m.d.comb += [top.uart_rx.eq(rx_buf.i), tx_buf.o.eq(top.uart_tx), led_buf.o.eq(top.error)]
        return m
