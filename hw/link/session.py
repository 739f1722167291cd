"""The host session every hardware backend runs: a model loaded, images classified, hidden
layers read back, through :class:`~xnorflow.hw.link.driver.AcceleratorDriver` over any
transport.

The Amaranth, Icarus, Verilator and board backends (:mod:`xnorflow.sim.backends`) and
``xnorflow board`` run the same sequence: ``connect`` (status: protocol version and
geometry, checked against the model folder's target), ``load`` (program, weights and
thresholds), then per image ``write_input``, ``start``, ``wait`` (the status carries the
accelerator's cycle count of the run), the scores (the class is their first argmax) and a
read-back of the hidden layers' output maps from the ``activations`` memory.
:meth:`HostSession.infer_batch` runs ``N <= max_batch`` images per START
(``docs/host-protocol.md``, Batches): one WRITE of all ``N`` images, ``START N``, the ``N``
score vectors and the ``N`` hidden maps of each layer (image ``n``'s map follows image
``n - 1``'s).

Hidden maps live in two ping-pong regions (``docs/program.md``): layer ``i`` writes region
``(i + 1) % 2``, so a layer's output survives the run unless a later hidden layer writes the
same region. :func:`xnorflow.sw.program.readable_layers` says which ones can be read; the
others are reported as ``None`` (not observable), never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...sw.errors import UserError
from ...sw.program import decode_program, hidden_from_words, readable_layers
from .driver import AcceleratorDriver

__all__ = ["HostSession", "ImageResult"]


@dataclass
class ImageResult:
    """One image through the accelerator."""

    prediction: int
    scores: list[int]
    hidden: list[np.ndarray | None]
    cycles: int


class HostSession:
    """A connected, loaded accelerator: classify images and read hidden layers back.

    Make one with :meth:`open`. ``model`` is the compiled model (``CompiledModel``: its
    layers tell which hidden maps to read and how), ``memories`` its memory images,
    ``target`` the geometry they were built for, ``name`` what error messages call the model
    (its folder).
    """

    def __init__(self, driver: AcceleratorDriver, model, memories, target, name: str = "model",
                 read_hidden: bool = True):
        self.driver = driver
        self.model, self.memories, self.target, self.name = model, memories, target, name
        self.read_hidden = read_hidden
        prog = next(m for m in memories if m.name == "program")
        self.header, self.descs = decode_program(prog.words)
        self.readable = readable_layers(self.descs)

    @classmethod
    async def open(cls, transport, model, memories, target, *, name: str = "model",
                   read_hidden: bool = True, load: bool = True) -> HostSession:
        """Connect over ``transport``, check the accelerator's geometry against ``target``
        and (unless ``load`` is false: the accelerator already holds them) write the memory
        images."""
        driver = AcceleratorDriver(transport)
        st = await driver.connect()
        if (st.rows, st.cols, st.width) != (target.rows, target.cols, target.width):
            raise UserError(f"{name}: compiled for {target.geometry} ({target.name}) but the "
                            f"accelerator is {st.geometry}; recompile for it or rebuild the "
                            "bitstream")
        self = cls(driver, model, memories, target, name, read_hidden)
        if load:
            await self.load()
        else:
            driver.header = self.header
        return self

    async def load(self) -> None:
        """(Re)write every memory image (after a reset the host must assume nothing)."""
        await self.driver.load(self.memories)

    @property
    def max_batch(self) -> int:
        """Most images one START may take (the loaded program's ``max_batch``, <= R)."""
        return int(self.header["max_batch"])

    def images_per_start(self, batch: int) -> int:
        """``batch`` capped to what one START may take (1 .. :attr:`max_batch`)."""
        return max(1, min(int(batch), self.max_batch))

    async def infer_all(self, pixels, batch: int = 1, on_start=None) -> list[ImageResult]:
        """Every image of ``pixels`` ``(N, H, W, C)``, :meth:`images_per_start` of
        ``batch`` per START; ``on_start(k)`` is called after each START of ``k`` images
        (progress bars)."""
        px = np.asarray(pixels)
        step = self.images_per_start(batch)
        out: list[ImageResult] = []
        for i in range(0, len(px), step):
            out += await self.infer_batch(px[i:i + step])
            if on_start is not None:
                on_start(len(px[i:i + step]))
        return out

    async def classify_stream(self, pixels, batch: int | None = None,
                              on_run=None) -> list[tuple[int, list[int]]]:
        """``(class, scores)`` of every image of ``pixels`` ``(N, H, W, C)``, the fastest way
        over the link (:meth:`AcceleratorDriver.classify_stream`: ``batch`` per START, by
        default :attr:`max_batch`; no hidden maps, no cycle counts)."""
        return await self.driver.classify_stream(pixels, batch, on_run)

    async def infer(self, pixels) -> ImageResult:
        """One image ``(H, W, C)``: one START."""
        return (await self.infer_batch(np.asarray(pixels)[None]))[0]

    async def infer_batch(self, pixels) -> list[ImageResult]:
        """``N`` images ``(N, H, W, C)`` (``1 <= N <=`` :attr:`max_batch`) in one START.

        The run's cycle count is shared out over its images (``cycles // N``, the first
        ``cycles % N`` images one more), so the images' cycles sum to the run's.
        """
        px = np.asarray(pixels)
        n = len(px)
        if not 1 <= n <= self.max_batch:
            raise UserError(f"{self.name}: a batch of {n} images; this program runs 1.."
                            f"{self.max_batch} per START (max_batch)")
        d = self.driver
        await d.write_input(px)
        await d.start(n)
        st = await d.wait(poll=1_000_000)
        results = await d.results(n)
        hidden = await self._read_hidden(n) if self.read_hidden else [[] for _ in range(n)]
        share, extra = divmod(int(st.cycles), n)
        return [ImageResult(cls, scores, hidden[i], share + (i < extra))
                for i, (cls, scores) in enumerate(results)]

    async def read_hidden_maps(self) -> list[np.ndarray | None]:
        """Every hidden layer's output map of the last one-image run (``None``: overwritten)."""
        return (await self._read_hidden(1))[0]

    async def _read_hidden(self, batch: int) -> list[list[np.ndarray | None]]:
        """Per image of the last run of ``batch`` images: every hidden layer's map."""
        out: list[list[np.ndarray | None]] = [[] for _ in range(batch)]
        hidden = [d for d in self.descs if not d["integer"]]
        for d, ok in zip(hidden, self.readable, strict=True):
            if not ok:
                for maps in out:
                    maps.append(None)
                continue
            size = d["out_h"] * d["out_w"] * d["out_stride"]
            words = await self.driver.read_memory("activations", d["out_base"], batch * size)
            for maps, mp in zip(out, hidden_from_words(words, d, self.target.width, batch),
                                strict=True):
                maps.append(mp)
        return out
