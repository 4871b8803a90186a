"""Output names for pictures made from image files: readable, and never two images to one place."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def _components(path: str | os.PathLike) -> tuple[str, ...]:
    """The absolute path's folders and the file's stem: ``/d/test/a/0.png`` ->
    ``("d", "test", "a", "0")`` (absolute, so ``0.png`` and ``../b/0.png`` differ)."""
    p = Path(os.path.abspath(path))
    return (*p.parent.parts[1:], p.stem)


def output_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """One distinct name per image, in order: the stem where it is unique; else the
    shortest tail of the path that tells the image from the others, joined with "_"
    (``test/a/0.png``, ``test/b/0.png`` -> ``a_0``, ``b_0``); a numeric suffix
    (``0-2``) as the last resort (the same file twice, ``0.png`` beside ``0.jpg``)."""
    parts = [_components(p) for p in paths]

    def tail(i: int, depth: int) -> tuple[str, ...]:
        return parts[i][-depth:]

    names = []
    for i, mine in enumerate(parts):
        others = [j for j, theirs in enumerate(parts) if theirs != mine]
        depth = 1
        while depth < len(mine) and any(tail(j, depth) == tail(i, depth) for j in others):
            depth += 1
        names.append("_".join(tail(i, depth)))
    taken: set[str] = set()
    unique = []
    for name in names:
        candidate, n = name, 1
        while candidate in taken:
            n += 1
            candidate = f"{name}-{n}"
        taken.add(candidate)
        unique.append(candidate)
    return unique
