"""cocotb tests of a board top (:class:`xnorflow.hw.boards.BoardTop`) through its UART pins.

A real UART model (``cocotbext-uart``) drives ``uart_rx`` and listens on ``uart_tx``; the
launcher (``tests/sim/test_board_top.py``) passes the configuration in the environment:

* ``BOARD_CORE``: ``echo`` (the bridge around :class:`~xnorflow.hw.boards.EchoCore`) or
  ``accelerator`` (the whole accelerator; then ``BOARD_MODEL`` names a compiled model folder
  and ``BOARD_CASES`` a ``.npz`` with ``pixels`` and the golden ``predictions``/``scores``);
* ``BOARD_DIVISOR`` (clock cycles per bit) and ``BOARD_TIMEOUT`` (inter-byte timeout, cycles).

The clock period is 10 ns, so the baud rate is ``100 MHz / BOARD_DIVISOR``.
"""

import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Timer
from cocotbext.uart import UartSink, UartSource

CLK_NS = 10
DIVISOR = int(os.environ.get("BOARD_DIVISOR", "8"))
TIMEOUT = int(os.environ.get("BOARD_TIMEOUT", "2000"))
CORE = os.environ.get("BOARD_CORE", "echo")
BAUD = 1e9 / (CLK_NS * DIVISOR)
BIT_NS = CLK_NS * DIVISOR


class UartTransport:
    """The host driver's transport (``async write(bytes)``, ``async read(n)``) over the
    UART model: the same interface as :class:`xnorflow.hw.serial_transport.SerialTransport`
    on a real port."""

    def __init__(self, dut, read_timeout_ns: int = 2_000_000):
        self.source = UartSource(dut.uart_rx, baud=BAUD, bits=8)
        self.sink = UartSink(dut.uart_tx, baud=BAUD, bits=8)
        self.read_timeout_ns = read_timeout_ns
        self._buf = bytearray()

    async def write(self, data: bytes) -> None:
        await self.source.write(bytes(data))
        while not self.source.idle():  # until the last stop bit is on the line
            await Timer(5 * BIT_NS, unit="ns")

    async def read(self, n: int) -> bytes:
        waited = 0
        while len(self._buf) < n:
            if self.sink.empty():
                if waited >= self.read_timeout_ns:
                    raise TimeoutError(f"read({n}): got {len(self._buf)} bytes before timeout")
                await Timer(5 * BIT_NS, unit="ns")  # poll at half a byte time
                waited += 5 * BIT_NS
                continue
            waited = 0
            self._buf += self.sink.read_nowait()
        out, self._buf = bytes(self._buf[:n]), self._buf[n:]
        return out

    def flush_input(self) -> None:
        self._buf.clear()
        self.sink.clear()


async def _reset(dut):
    dut.uart_rx.value = 1
    cocotb.start_soon(Clock(dut.clk, CLK_NS, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 4)


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
        await _reset(dut)
        link = UartTransport(dut)
        data = bytes(range(256))
        await link.write(data)
        assert await link.read(len(data)) == data

    @cocotb.test()
    async def framing_error_then_ready(dut):
        """A frame with a 0 stop bit is dropped, lights ``error``, and the next bytes work."""
        await _reset(dut)
        link = UartTransport(dut, read_timeout_ns=40 * BIT_NS)
        await link.write(b"\x11\x22")
        assert await link.read(2) == b"\x11\x22"
        await _bad_frame(dut, 0x5A)
        assert dut.error.value == 1, "framing error did not raise the error light"
        try:
            extra = await link.read(1)
        except TimeoutError:
            extra = b""
        assert extra == b"", f"a bad frame was passed on: {extra!r}"
        await link.write(b"\x33\x44\x55")
        assert await link.read(3) == b"\x33\x44\x55"
        assert dut.error.value == 0, "error light not cleared by the next good byte"

    @cocotb.test()
    async def inter_byte_timeout(dut):
        """Silence after a byte for longer than the timeout pulses abort (error light)."""
        await _reset(dut)
        link = UartTransport(dut)
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

    from xnorflow.hw import driver as hd
    from xnorflow.sw import golden
    from xnorflow.sw.images import load_model_folder, target_from_record

    def _model():
        manifest, model, memories = load_model_folder(os.environ["BOARD_MODEL"])
        target = target_from_record(manifest["target"])
        px = np.load(os.environ["BOARD_IMAGES"])
        return model, memories, target, px, golden.run(model, px, width=target.width)

    async def _connect(link, target, memories):
        drv = hd.AcceleratorDriver(link)
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
        await _reset(dut)
        link = UartTransport(dut)
        drv = await _connect(link, target, memories)
        read_back = await drv.read_memory("program", 0, 4)
        prog = next(m for m in memories if m.name == "program")
        assert read_back == [int(w) for w in prog.words[:4]]
        for i in range(len(px)):
            await _check(drv, px, ref, i)

    @cocotb.test()
    async def bad_frames_leave_device_ready(dut):
        """A framing error mid-frame, a short frame (timeout) and a bad checksum: after
        each, the next command is answered and the next image matches golden."""
        model, memories, target, px, ref = _model()
        await _reset(dut)
        link = UartTransport(dut, read_timeout_ns=40 * BIT_NS * 10)
        drv = await _connect(link, target, memories)
        words = [0] * 8
        frame = hd.encode_write_input(words, target.width)

        # 1. framing error in the middle of a frame, the rest of the frame never sent
        await link.write(frame[:3])
        await _bad_frame(dut, 0x00)
        assert dut.error.value == 1
        await ClockCycles(dut.clk, TIMEOUT + 20)
        link.flush_input()
        st = await drv.status()
        assert st.version == hd.PROTOCOL_VERSION and not st.busy
        await _check(drv, px, ref, 0)

        # 2. short frame: the host stops after half a frame; the timeout returns the decoder
        # to idle (no response to the half frame)
        await link.write(frame[: len(frame) // 2])
        try:
            got = await link.read(1)
        except TimeoutError:
            got = b""
        assert got == b"", f"a half frame was answered: {got!r}"
        await ClockCycles(dut.clk, TIMEOUT + 20)
        assert dut.error.value == 1, "no abort after the short frame"
        st = await drv.status()
        assert not st.busy
        await _check(drv, px, ref, 1 % len(px))

        # 3. bad checksum: an error response, then business as usual
        bad = bytearray(hd.encode_frame(hd.CMD_READ_STATUS))
        bad[-1] ^= 0xFF
        await link.write(bytes(bad))
        header = await link.read(4)
        assert header[0] == hd.SYNC_RESPONSE and header[1] == hd.ERR_CHECKSUM, header.hex()
        await link.read(int.from_bytes(header[2:4], "little") + 1)
        await _check(drv, px, ref, 2 % len(px))
