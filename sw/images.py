"""Memory images, format v1: the accelerator's only input besides the image data.

See ``docs/memory-images.md``. A compiled model folder holds, per memory, a
``$readmemh``-style hex file and the same words as raw little-endian binary, plus one JSON
manifest (format version, target geometry, per memory: name, depth, width, layout, sha256).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FORMAT_VERSION = 1


@dataclass
class MemoryImage:
    """The initial contents of one accelerator memory.

    ``words`` holds ``depth`` unsigned words of ``width`` bits each (a ``uint64`` array when
    ``width <= 64``, else an object array of Python ints); ``layout`` says in words how the
    contents are arranged (it is copied into the manifest).
    """

    name: str
    width: int
    words: np.ndarray
    layout: str

    @property
    def depth(self) -> int:
        return len(self.words)
