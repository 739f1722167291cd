"""Accelerator targets: array geometry and memory capacities of each supported board.

A :class:`Target` says what the compiler may assume: the systolic array is ``rows x cols``
processing elements of ``width``-bit words, and each on-chip memory holds at most
``memories[name]`` words of its width. ``None`` as a capacity means unlimited (the ``sim``
target). The memory names are those of the accelerator (``docs/program.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Target:
    name: str
    rows: int
    cols: int
    width: int
    memories: dict = field(default_factory=dict)  # name -> (word width in bits, depth or None)
    board: str | None = None
    description: str = ""

    @property
    def geometry(self) -> str:
        return f"{self.rows}x{self.cols}x{self.width}"
