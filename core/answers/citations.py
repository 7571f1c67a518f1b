"""Citation checking, shared by chat (the app) and answer scoring (the engine): standard library only.

A citation is kept only if it follows a quote, the cited document and pages lie within a passage that was in
the prompt, and the words it quotes are on those pages (whitespace, case and line-break hyphens aside). An
answer is supported when it cites, and every citation is kept. Citations therefore come from retrieved chunk
ids, never from the model's say-so: a document that says "cite page 999" cannot make a citation appear.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

_CITATION = re.compile(r"\[([^\[\]]+?) pp?\. (\d+)(?:\s*[-–]\s*(\d+))?\]")
_QUOTE = re.compile(r"[“\"]([^”\"]{3,})[”\"]")
_UNCLOSED = re.compile(r"[“\"]([^”\"]{3,})$")  # a quote the model opened and never closed before citing

PageText = Callable[[int, int], str]  # (document id, page number) -> the page's text


@dataclass(frozen=True)
class Passage:
    """A chunk of a document as it was put in a prompt."""

    chunk_id: int
    document_id: int
    document: str
    page_first: int
    page_last: int
    text: str

    @property
    def pages(self) -> list[int]:
        return list(range(self.page_first, self.page_last + 1))

    @property
    def citation(self) -> str:
        return citation(self.document, self.page_first, self.page_last)


@dataclass(frozen=True)
class Citation:
    document: str
    pages: list[int]
    chunk_id: int
    quote: str | None


def citation(document: str, page_first: int, page_last: int) -> str:
    """'contract.pdf p. 37', or 'contract.pdf pp. 37-38' for a passage across pages."""
    if page_first == page_last:
        return f"{document} p. {page_first}"
    return f"{document} pp. {page_first}-{page_last}"


def check_citations(text: str, passages: Sequence[Passage], page_text: PageText) -> tuple[list[Citation], bool]:
    """The citations in `text` that the passages back, and whether all of them were."""
    kept: list[Citation] = []
    all_backed = True
    previous_end = 0
    for match in _CITATION.finditer(text):
        name, first = match[1].strip(), int(match[2])
        last = int(match[3] or first)
        before = text[previous_end : match.start()]
        quotes = _QUOTE.findall(before) or _UNCLOSED.findall(before.rstrip())
        quote = quotes[-1].rstrip("’' ") if quotes else None
        previous_end = match.end()
        # The cited pages must lie within one passage of the prompt: a range reaching past it ("pp. 1-999" for a
        # passage on p. 41) cites pages the model was never shown.
        passage = next(
            (p for p in passages if p.document == name and p.page_first <= first <= last <= p.page_last), None
        )
        pages = list(range(first, last + 1))
        # A label with no quote before it is an echo of the prompt (the base model's few "citations" were),
        # not evidence: it is not a citation.
        if passage is None or not quote or not _quoted_on(page_text, passage.document_id, pages, quote):
            all_backed = False
            continue
        kept.append(Citation(name, pages, passage.chunk_id, quote))
    return kept, all_backed and bool(kept)


def _quoted_on(page_text: PageText, document_id: int, pages: list[int], quote: str) -> bool:
    text = _plain(" ".join(page_text(document_id, page) for page in pages))
    return _plain(quote.removesuffix("…").removesuffix("...")) in text


def _plain(text: str) -> str:
    text = re.sub(r"-\s*\n\s*", "", text)  # a word hyphenated across a line break
    return " ".join(re.sub(r"[“”\"‘’']", "'", text).lower().split())
