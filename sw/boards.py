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
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

__all__ = ["BOARDS", "FAMILIES", "REPORT_VERSION", "Board", "Family", "bitstream_folder",
           "board_of_target", "get_board", "load_report", "synthesis_report"]


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
    (``SB_PLL40_PAD``).
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

    @property
    def family_facts(self) -> Family:
        return FAMILIES[self.family]


BOARDS: dict[str, Board] = {
    b.name: b for b in (
        # the whole accelerator (2x2x32, `up5k`) reaches 27.6-28.3 MHz
        Board("icebreaker", "iCEBreaker v1.0 (iCE40 UP5K-SG48), FTDI UART on pins 6/9",
              family="ice40", device="iCE40UP5K", package="SG48", spram=True, dsp=True,
              clock="clk12", clock_freq=12e6, default_freq=24e6, target="up5k", brams=30,
              platform="icebreaker:ICEBreakerPlatform", no_init=("weights",), pll_pad=True),
        # the whole accelerator (2x4x16, `hx8k`) reaches 74.7 MHz
        Board("hx8k-evn", "Lattice iCE40-HX8K breakout (iCE40HX8K-CT256), FTDI UART",
              family="ice40", device="iCE40HX8K", package="CT256", spram=False, dsp=False,
              clock="clk12", clock_freq=12e6, default_freq=72e6, target="hx8k", brams=32,
              platform="ice40_hx8k_b_evn:ICE40HX8KBEVNPlatform"),
        # the whole accelerator (8x8x32, `ecp5-85f`) reaches 53.9 MHz; the PLL makes
        # 46.875 MHz of a 48 MHz request from the 25 MHz oscillator
        Board("ulx3s-85f", "Radiona ULX3S with LFE5U-85F-6BG381, FTDI UART",
              family="ecp5", device="LFE5U-85F", package="BG381", spram=False, dsp=True,
              clock="clk25", clock_freq=25e6, default_freq=48e6, target="ecp5-85f", brams=208,
              platform="ulx3s:ULX3S_85F_Platform"),
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
