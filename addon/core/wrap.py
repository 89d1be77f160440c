"""Word wrapping to a width in pixels (Blender labels never wrap by themselves).

`measure` returns a string's width in the same unit as `width` (the Blender layer passes blf's
text width at the UI's font size and scale), so lines fill the sidebar as it really is instead of
guessing characters per line. Lines break only at spaces; a single word wider than the line (a
long path) breaks after a path separator if it has one, and otherwise stays whole: a clipped end
is better than a word cut in two.
"""
from __future__ import annotations

import re
from typing import Callable


def wrap(text: str, width: float, measure: Callable[[str], float]) -> list[str]:
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            pieces = _pieces(word, width, measure)
            if len(pieces) > 1:  # a long path: its own lines, no spaces put into it
                lines += [line] if line else []
                lines += pieces[:-1]
                line = pieces[-1]
                continue
            candidate = f"{line} {word}" if line else word
            if line and measure(candidate) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def _pieces(word: str, width: float, measure: Callable[[str], float]) -> list[str]:
    """The word itself, or, when too wide, its path parts (each keeps its trailing separator)."""
    if measure(word) <= width:
        return [word]
    parts = [p for p in re.split(r"(?<=[/\\])", word) if p]
    if len(parts) == 1:
        return parts
    pieces, current = [], ""
    for part in parts:
        if current and measure(current + part) > width:
            pieces.append(current)
            current = part
        else:
            current += part
    return pieces + [current] if current else pieces
