"""cocotb tests of a board top (:class:`xnorflow.hw.boards.BoardTop`) through its UART pins.

A real UART model (``cocotbext-uart``, through
:class:`xnorflow.hw.link.CocotbUartTransport`) drives ``uart_rx`` and listens on ``uart_tx``; the
launcher (``tests/sim/test_board_top.py``) passes the configuration in the environment:

* ``BOARD_CORE``: ``echo`` (the bridge around :class:`~xnorflow.hw.boards.EchoCore`) or
  ``accelerator`` (the whole accelerator; then ``BOARD_MODEL`` names a compiled model folder
  and ``BOARD_CASES`` a ``.npz`` with ``pixels`` and the golden ``predictions``/``scores``);
* ``BOARD_DIVISOR`` (clock cycles per bit) and ``BOARD_TIMEOUT`` (inter-byte timeout, cycles).

The clock period is 10 ns, so the baud rate is ``100 MHz / BOARD_DIVISOR``.
"""

import os

import cocotb
from cocotb.triggers import ClockCycles, Timer

from xnorflow.hw.link import CocotbUartTransport
from xnorflow.sim.tb.board import start_board_top

CLK_NS = 10
DIVISOR = int(os.environ.get("BOARD_DIVISOR", "8"))
TIMEOUT = int(os.environ.get("BOARD_TIMEOUT", "2000"))
CORE = os.environ.get("BOARD_CORE", "echo")
BAUD = 1e9 / (CLK_NS * DIVISOR)
BIT_NS = CLK_NS * DIVISOR


def uart_link(dut, read_timeout_ns: int = 2_000_000) -> CocotbUartTransport:
    """The host driver's transport over the UART model on the board top's pins."""
    return CocotbUartTransport(dut.uart_rx, dut.uart_tx, BAUD, read_timeout_ns)


async def _bad_frame(dut, byte: int) -> None:
    """Drive one frame whose stop bit is 0 (a framing error), then idle high."""
    dut.uart_rx.value = 0
    await Timer(BIT_NS, unit="ns")
    for i in range(8):
        dut.uart_rx.value = (byte >> i) & 1
        await Timer(BIT_NS, unit="ns")
    dut.uart_rx.value = 0  # stop bit 0
    await Timer(3 * BIT_NS, unit="ns")
    dut.uart_rx.value = 1
    await Timer(2 * BIT_NS, unit="ns")


if CORE == "echo":

    @cocotb.test()
    async def echo_through_uart(dut):
        """Bytes sent by the UART model come back unchanged, at line rate."""
        await start_board_top(dut, CLK_NS)
        link = uart_link(dut)
        data = bytes(range(256))
        await link.write(data)
        assert await link.read(len(data)) == data

    @cocotb.test()
    async def framing_error_then_ready(dut):
        """A frame with a 0 stop bit is dropped, lights ``error``, and the next bytes work."""
        await start_board_top(dut, CLK_NS)
        link = uart_link(dut, read_timeout_ns=40 * BIT_NS)
        await link.write(b"\x11\x22")
        assert await link.read(2) == b"\x11\x22"
        await _bad_frame(dut, 0x5A)
        assert dut.error.value == 1, "framing error did not raise the error light"
        extra = await link.read(1)  # nothing comes: empty after the read timeout
        assert extra == b"", f"a bad frame was passed on: {extra!r}"
        await link.write(b"\x33\x44\x55")
        assert await link.read(3) == b"\x33\x44\x55"
        assert dut.error.value == 0, "error light not cleared by the next good byte"

    @cocotb.test()
    async def inter_byte_timeout(dut):
        """Silence after a byte for longer than the timeout pulses abort (error light)."""
        await start_board_top(dut, CLK_NS)
        link = uart_link(dut)
        await link.write(b"\x01")
        assert await link.read(1) == b"\x01"
        await ClockCycles(dut.clk, TIMEOUT // 2)
        assert dut.error.value == 0, "abort before the timeout"
        await ClockCycles(dut.clk, TIMEOUT // 2 + 20)
        assert dut.error.value == 1, "no abort after the timeout"
        await link.write(b"\x02")
        assert await link.read(1) == b"\x02"


if CORE == "accelerator":
    import numpy as np

    from xnorflow.hw import link as hl
    from xnorflow.sw import golden
    from xnorflow.sw.images import load_model_folder, target_from_record

    def _model():
        manifest, model, memories = load_model_folder(os.environ["BOARD_MODEL"])
        target = target_from_record(manifest["target"])
        px = np.load(os.environ["BOARD_IMAGES"])
        return model, memories, target, px, golden.run(model, px, width=target.width)

    async def _connect(link, target, memories):
        drv = hl.AcceleratorDriver(link)
        st = await drv.connect()
        assert (st.rows, st.cols, st.width) == (target.rows, target.cols, target.width)
        await drv.load(memories)
        return drv

    async def _check(drv, px, ref, idx) -> None:
        cls, scores = await drv.classify(px[idx])
        assert [int(s) for s in scores] == [int(s) for s in ref.scores[idx]], (
            f"image {idx}: scores {scores} != golden {list(ref.scores[idx])}")
        assert cls == int(ref.predictions[idx])

    @cocotb.test()
    async def classify_through_uart(dut):
        """Load a compiled model over the UART with the host driver, classify, vs golden."""
        model, memories, target, px, ref = _model()
        await start_board_top(dut, CLK_NS)
        link = uart_link(dut)
        drv = await _connect(link, target, memories)
        probe = [v & ((1 << target.width) - 1) for v in (0x12345678, 0x9ABCDEF0, 0, 1)]
        await drv.write_memory("activations", 3, probe)
        assert await drv.read_memory("activations", 3, 4) == probe
        for i in range(len(px)):
            await _check(drv, px, ref, i)

    @cocotb.test()
    async def bad_frames_leave_device_ready(dut):
        """A framing error mid-frame, a short frame (timeout) and a bad checksum: after
        each, the next command is answered and the next image matches golden."""
        model, memories, target, px, ref = _model()
        await start_board_top(dut, CLK_NS)
        link = uart_link(dut, read_timeout_ns=40 * BIT_NS * 10)
        drv = await _connect(link, target, memories)
        words = [0] * 8
        frame = hl.encode_write(hl.MemoryId["activations"], 0, words, target.width)[0]

        # 1. framing error in the middle of a frame, the rest of the frame never sent
        await link.write(frame[:3])
        await _bad_frame(dut, 0x00)
        assert dut.error.value == 1
        await ClockCycles(dut.clk, TIMEOUT + 20)
        link.flush_input()
        st = await drv.status()
        assert st.version == hl.PROTOCOL_VERSION and not st.busy
        await _check(drv, px, ref, 0)

        # 2. short frame: the host stops after half a frame; the timeout returns the decoder
        # to idle (no response to the half frame)
        await link.write(frame[: len(frame) // 2])
        got = await link.read(1)
        assert got == b"", f"a half frame was answered: {got!r}"
        await ClockCycles(dut.clk, TIMEOUT + 20)
        assert dut.error.value == 1, "no abort after the short frame"
        st = await drv.status()
        assert not st.busy
        await _check(drv, px, ref, 1 % len(px))

        # 3. bad checksum: an error response, then business as usual
        bad = bytearray(hl.encode_status_request())
        bad[-1] ^= 0xFF
        await link.write(bytes(bad))
        header = await link.read(4)
        assert header[0] == hl.SYNC_RESPONSE and header[1] == hl.Status.CHECKSUM, header.hex()
        await link.read(int.from_bytes(header[2:4], "little") + 1)
        await _check(drv, px, ref, 2 % len(px))
