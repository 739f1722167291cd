"""The supported FPGA boards: every fact about each one, in one place, without gateware.

A :class:`Board` says which FPGA it carries (device, package, family and what the family
has: SPRAM, DSPs), how it is clocked (oscillator, the system clock the current accelerator
meets there), which compiler target (:mod:`xnorflow.sw.targets`) fits its memories, which
memories it builds without initial contents, and which ``amaranth-boards`` platform
describes its pins. A :class:`Family` holds what all boards of an FPGA family share (the
bitstream's file name, the BRAM block depth a content swap replaces).

Everything else reads these records: :mod:`xnorflow.sw.targets` (a target's board),
:mod:`xnorflow.hw.boards` (PLL and board tops), :mod:`xnorflow.hw.memories` (SPRAM),
:mod:`xnorflow.synth` (placeholders, swaps, reports) and the demo's presets. This module
imports nothing but the standard library, so ``sw`` reads it without Amaranth.

It also says where a board's builds live and what their report looks like
(:func:`bitstream_folder`, :data:`REPORT_VERSION`, :func:`load_report`): ``xnorflow synth``
writes them, ``xnorflow compare`` and ``--swap-model`` read them.

``default_freq`` is the system clock a build asks for unless told otherwise: one the whole
accelerator meets on that board (``benchmarks/results/synth.md``), not a goal. The goals
(48 / 120 / 150 MHz) are in ``docs/synthesis.md`` and ``benchmarks/synth.py``.

The host link: each board's USB-UART bridge chip (:class:`UartBridge`, :data:`BRIDGES`: the
rates it can make and its highest) and the baud rate its board top is built for by default
(``default_baud``). Which rates the gateware can also make at a clock, and what a rate gives in
images/s, is :mod:`xnorflow.hw.link.throughput`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

__all__ = ["BOARDS", "BRIDGES", "FAMILIES", "REPORT_VERSION", "SAFE_BAUD", "Board", "Family",
           "UartBridge", "bitstream_folder", "board_of_target", "get_board", "load_report",
           "synthesis_report"]


@dataclass(frozen=True)
class Family:
    """What every board of one FPGA family shares.

    ``bitstream``: the file name a build writes (``top.bin`` for ``icepack``, ``top.bit``
    for ``ecppack``). ``swap_depth_multiple``: ``icebram``/``ecpbram`` replace whole RAM
    blocks, so a memory's contents can be swapped into a bitstream only when its depth is a
    multiple of this many words (256 for an iCE40 EBR, 512 for an ECP5 DP16KD).
    ``bram_shapes``: the (depth, width) configurations of one block RAM (iCE40 EBR 4 kbit,
    ECP5 DP16KD 18 kbit), from which :func:`xnorflow.hw.memories.block_rams` estimates how
    many blocks a memory takes.
    """

    name: str
    bitstream: str
    swap_depth_multiple: int
    bram_shapes: tuple[tuple[int, int], ...]


FAMILIES: dict[str, Family] = {
    f.name: f for f in (
        Family("ice40", "top.bin", 256, ((256, 16), (512, 8), (1024, 4), (2048, 2))),
        Family("ecp5", "top.bit", 512,
               ((512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1))),
    )
}


#: The baud rate every board's bridge and board top run (the default where no faster one has
#: been checked in simulation at the board's clock).
SAFE_BAUD = 1_000_000


@dataclass(frozen=True)
class UartBridge:
    """A USB-UART bridge chip between the host and a board's FPGA.

    FTDI chips make ``reference / d`` baud, ``d`` being 1, 1.5 or ``n + k / 8`` with
    ``n = 2 .. 16384`` and ``k = 0 .. 7`` (FTDI application note AN232B-05, "Configuring
    FT232R, FT2232 and FT232B Baud Rates": a divisor of 0 means 1, one of 1 means 1.5;
    the hi-speed chips use the same divisors on a 12 MHz reference, as the Linux driver's
    ``ftdi_2232h_baud_base_to_divisor`` computes them). ``max_baud`` is the data sheet's
    highest rate, ``source`` says where the figures come from.
    """

    chip: str
    reference: float
    max_baud: int
    source: str

    def rate(self, baud: float) -> float | None:
        """The baud rate the chip makes when asked for ``baud`` (the nearest divisor, as the
        FTDI drivers choose it), or None when it cannot: above :attr:`max_baud`, or no
        divisor within 3 % (the drivers' own limit, AN232B-05)."""
        if not baud > 0 or baud > self.max_baud:
            return None
        eighths = round(8 * self.reference / baud)
        if eighths < 16:  # below 2 only the divisors 1 and 1.5 exist
            eighths = min((8, 12, 16), key=lambda e: abs(self.reference * 8 / e - baud))
        eighths = min(eighths, 8 * 16384 + 7)
        made = self.reference * 8 / eighths
        return made if abs(made - baud) <= 0.03 * baud else None

    def rates(self, lowest: float = 0.0):
        """The rates the chip makes, fastest first, down to ``lowest``."""
        for eighths in (8, 12, *range(16, 8 * 16384 + 8)):
            made = self.reference * 8 / eighths
            if made < lowest:
                return
            if made <= self.max_baud:
                yield made


#: The bridge chips of the supported boards.
BRIDGES: dict[str, UartBridge] = {
    b.chip: b for b in (
        # hi-speed USB; the UART's baud generator runs from 120 MHz / 10 = 12 MHz
        UartBridge("FT2232H", 12e6, 12_000_000,
                   "FTDI DS_FT2232H data sheet: UART data rates up to 12 Mbaud; AN232B-05 "
                   "divisors on a 12 MHz reference"),
        # full-speed USB; 48 MHz / 16 = 3 MHz reference
        UartBridge("FT231X", 3e6, 3_000_000,
                   "FTDI DS_FT231X data sheet: data transfer rates from 300 baud to 3 Mbaud; "
                   "AN232B-05 divisors on a 3 MHz reference"),
    )
}


@dataclass(frozen=True)
class Board:
    """A supported board.

    ``device``/``package`` are the FPGA's (as ``amaranth-boards`` names them); ``spram`` and
    ``dsp`` say whether it has single-port 256-kbit RAMs (iCE40 UP5K) and hard multipliers.
    ``clock`` is the oscillator's resource name and ``clock_freq`` its frequency (Hz);
    ``default_freq`` the system clock (Hz) the board top asks its PLL for by default.
    ``target`` names the compiler target whose memories fit this FPGA; ``brams`` is how many
    block RAMs the FPGA has. ``no_init`` lists
    the memories built without initial contents (SPRAM cannot be initialised by the
    bitstream: the host loads them over the link). ``platform`` is the ``amaranth-boards``
    class as ``"module:Class"``; ``pll_pad``: the oscillator pin is the iCE40 PLL's own pad
    (``SB_PLL40_PAD``). ``bridge`` names the USB-UART chip (:data:`BRIDGES`) and
    ``default_baud`` the rate the board top is built for unless told otherwise.
    """

    name: str
    description: str
    family: str
    device: str
    package: str
    spram: bool
    dsp: bool
    clock: str
    clock_freq: float
    default_freq: float
    target: str
    platform: str
    brams: int = 0
    no_init: tuple[str, ...] = ()
    pll_pad: bool = False
    bridge: str = "FT2232H"
    default_baud: int = SAFE_BAUD

    @property
    def family_facts(self) -> Family:
        return FAMILIES[self.family]

    @property
    def uart_bridge(self) -> UartBridge:
        return BRIDGES[self.bridge]


BOARDS: dict[str, Board] = {
    b.name: b for b in (
        # the whole accelerator (8x2x32, `up5k`) reaches 41.0-45.49 MHz at a 48 MHz
        # request (nextpnr seeds 2 and 3, benchmarks/results/synth.md, docs/accelerator.md);
        # it is built for 36 MHz (41.96 MHz there, seed 1), as `xnorflow demo` builds it
        Board("icebreaker", "iCEBreaker v1.0 (iCE40 UP5K-SG48), FTDI UART on pins 6/9",
              family="ice40", device="iCE40UP5K", package="SG48", spram=True, dsp=True,
              clock="clk12", clock_freq=12e6, default_freq=36e6, target="up5k", brams=30,
              platform="icebreaker:ICEBreakerPlatform", no_init=("weights",), pll_pad=True,
              # 3 Mbaud = 12 MHz / 4 on the FT2232H, 36 MHz / 12 in the gateware (12 samples a
              # bit), simulated with the driver in benchmarks/results/link.md
              bridge="FT2232H", default_baud=3_000_000),
        # the whole accelerator (4x4x32, `hx8k`) reaches 106.0 MHz at a 120 MHz request
        # (seed 2, benchmarks/results/synth.md); built for 90 MHz (99.52, timing met, seed 1)
        Board("hx8k-evn", "Lattice iCE40-HX8K breakout (iCE40HX8K-CT256), FTDI UART",
              family="ice40", device="iCE40HX8K", package="CT256", spram=False, dsp=False,
              clock="clk12", clock_freq=12e6, default_freq=90e6, target="hx8k", brams=32,
              platform="ice40_hx8k_b_evn:ICE40HX8KBEVNPlatform", bridge="FT2232H"),
        # the whole accelerator (8x8x32, `ecp5-85f`) reaches 83.5-91.1 MHz at a 150 MHz
        # request (mem_regs = 2, seeds 1-3, benchmarks/results/synth.md); built for 75 MHz
        # (91.22, timing met, seed 1, benchmarks/results/default-clocks/; it was 48 MHz,
        # 46.875 from the PLL, when the design reached 58.1). 75 MHz = 25 MHz x 3, exactly
        Board("ulx3s-85f", "Radiona ULX3S with LFE5U-85F-6BG381, FTDI UART",
              family="ecp5", device="LFE5U-85F", package="BG381", spram=False, dsp=True,
              clock="clk25", clock_freq=25e6, default_freq=75e6, target="ecp5-85f", brams=208,
              platform="ulx3s:ULX3S_85F_Platform", bridge="FT231X"),
    )
}


def get_board(name: str) -> Board:
    """The board called ``name``; :class:`UserError` listing the known boards otherwise."""
    try:
        return BOARDS[name]
    except KeyError:
        raise UserError(
            f"unknown board {name!r}; choose one of {', '.join(sorted(BOARDS))}"
        ) from None


def board_of_target(target: str) -> Board | None:
    """The board whose compiler target is called ``target`` (None for ``sim``)."""
    return next((b for b in BOARDS.values() if b.target == target), None)


# ----- where builds live, and their report -----------------------------------------------
#: Version of a build's ``report.json`` (``docs/synthesis.md``); a reader refuses others.
REPORT_VERSION = 1


def bitstream_folder(board: str, geometry: str, root: str | Path | None = None) -> Path:
    """Where ``xnorflow synth`` puts a build by default: ``<root>/<board>/<geometry>``, with
    ``root`` = ``./bitstreams`` under the working folder."""
    return Path("bitstreams" if root is None else root) / board / geometry


def load_report(folder: str | Path) -> dict:
    """The ``report.json`` of the build in ``folder``; :class:`UserError` if it is missing,
    not JSON, or of another :data:`REPORT_VERSION`."""
    path = Path(folder) / "report.json"
    if not path.is_file():
        raise UserError(f"{path}: missing; build the bitstream first with xnorflow synth")
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable report ({e})") from None
    version = report.get("report_version") if isinstance(report, dict) else None
    if version != REPORT_VERSION:
        raise UserError(f"{path}: report_version {version!r}, this xnorflow reads "
                        f"{REPORT_VERSION}; rebuild it with xnorflow synth")
    return report


def synthesis_report(board: str | None, geometry: str,
                     root: str | Path | None = None) -> dict | None:
    """The report of the whole accelerator built for ``board`` at ``geometry`` (in
    :func:`bitstream_folder`), or None: no board (a ``sim`` target), no build, a report of
    another version, a stand-in design (the bare array, the loopback), or no Fmax."""
    if board is None:
        return None
    try:
        report = load_report(bitstream_folder(board, geometry, root))
    except UserError:
        return None
    if not str(report.get("design", "")).startswith("accelerator"):
        return None
    if not isinstance(report.get("fmax_mhz"), (int, float)) or report["fmax_mhz"] <= 0:
        return None
    return report
