"""Fixed-width plain-text tables for the console (`tlkit backbones`, `tlkit doctor --list`, `tlkit reproduce`)."""
from __future__ import annotations

from typing import Sequence


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """`header` and `rows` (cells as strings) in columns two spaces apart, a rule of dashes under the header; the
    last column is not padded, so a long free-text column (meanings, block lists) leaves no trailing blanks."""
    lines = [tuple(header), *(tuple(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    text = ["  ".join([cell.ljust(width) for cell, width in zip(line[:-1], widths)] + [line[-1]]) for line in lines]
    text.insert(1, "-" * len(text[0]))
    return "\n".join(text)
