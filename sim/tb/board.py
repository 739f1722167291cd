"""What the board-top testbenches share (``test_board_top.py``, ``test_link.py``)."""

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles


async def start_board_top(dut, clk_ns: int) -> None:
    """Start the clock (period ``clk_ns``) with the UART line idle (high) and pulse reset
    for 4 cycles; returns 4 cycles after reset is released."""
    dut.uart_rx.value = 1
    cocotb.start_soon(Clock(dut.clk, clk_ns, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 4)
