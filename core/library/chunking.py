"""Pages of text to chunks of at most `size` characters, cut where the text itself breaks.

A document's text is its pages joined by PAGE_SEPARATOR; a chunk is a slice [start, end) of that text, so
its offsets and pages are exact and any answer built on it can cite "contract.pdf p. 37".
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from core.errors import KnownError

PAGE_SEPARATOR = "\n\n"
DEFAULT_SIZE = 512

# Indexed with a chunk that starts in a document's first OPENING_CHARS characters (`index_context`): a
# question about the agreement itself (its name, parties, date) is answered by its first lines, which
# share no word with the question, so search asks for this token instead. No document contains it.
OPENING_MARK = "tunedeskopening"
# A cover page, a table of contents or a letterhead can push the title and parties some way down, rarely
# past this.
OPENING_CHARS = 1500

# Where to cut, best first: a blank line, the end of a sentence at the end of a line, the end of a
# sentence, a line break (PDF text breaks every printed line), a space. A cut is taken only if it leaves
# the chunk at least half full; otherwise the next kind is tried, and at worst the text is cut hard.
_BREAKS = [
    re.compile(r"\n[ \t]*\n\s*"),
    re.compile(r"[.!?;:][\"'”’)\]]*[ \t]*\n\s*"),
    re.compile(r"[.!?;:][\"'”’)\]]*\s+"),
    re.compile(r"\n\s*"),
    re.compile(r"\s+"),
]
_SPACE = re.compile(r"\s*")
_SPACE_CHAR = re.compile(r"\s")


@dataclass(frozen=True)
class Chunk:
    text: str
    start: int  # offsets into the document text (pages joined by PAGE_SEPARATOR)
    end: int
    page_first: int  # 1-based
    page_last: int


def check_settings(*, size: int, overlap: int) -> None:
    """Refuse, in one sentence, a chunk size or overlap that cannot cut text."""
    if size < 16:
        raise KnownError(f"The chunk size must be at least 16 characters, not {size}.")
    if not 0 <= overlap <= size // 2:
        raise KnownError(f"The overlap must be between 0 and half the chunk size ({size // 2}), not {overlap}.")


def page_starts(pages: list[str]) -> list[int]:
    """Offset of each page's first character in the document text."""
    starts, offset = [], 0
    for page in pages:
        starts.append(offset)
        offset += len(page) + len(PAGE_SEPARATOR)
    return starts


def chunk_pages(pages: list[str], *, size: int = DEFAULT_SIZE, overlap: int = 0) -> list[Chunk]:
    """Cut the pages into chunks of at most `size` characters; each chunk after the first repeats about
    `overlap` characters of the one before, starting at a word."""
    check_settings(size=size, overlap=overlap)
    text = PAGE_SEPARATOR.join(pages)
    starts = page_starts(pages)
    chunks: list[Chunk] = []
    start = _skip_space(text, 0)
    while start < len(text):
        end = _cut(text, start, size)
        stripped_end = len(text[start:end].rstrip()) + start
        chunks.append(
            Chunk(
                text=text[start:stripped_end],
                start=start,
                end=stripped_end,
                page_first=bisect.bisect_right(starts, start),
                page_last=bisect.bisect_right(starts, stripped_end - 1),
            )
        )
        if end == len(text):
            break
        start = _skip_space(text, _next_start(text, start, end, overlap))
    return chunks


def index_context(start: int) -> str:
    """What the search index knows of a chunk besides its text: its place in the document, from the
    chunk's start offset."""
    return OPENING_MARK if start < OPENING_CHARS else ""


def _cut(text: str, start: int, size: int) -> int:
    limit = start + size
    if limit >= len(text):
        return len(text)
    window = text[start:limit]
    for pattern in _BREAKS:
        ends = [match.end() for match in pattern.finditer(window, size // 2)]
        if ends:
            return start + ends[-1]
    return limit


def _next_start(text: str, start: int, end: int, overlap: int) -> int:
    if overlap == 0:
        return end
    # Step back `overlap` characters, then forward to the next word so no chunk starts mid-word.
    back = max(end - overlap, start + 1)
    space = _SPACE_CHAR.search(text, back, end)
    return space.end() if space else end


def _skip_space(text: str, position: int) -> int:
    return _SPACE.match(text, position).end()  # type: ignore[union-attr]  # \s* always matches
