"""Question-and-answer pairs about the library's passages, from three sources:

- extractive: no model needed; definitions, numbered clauses, amounts and time limits, each answered by a
  sentence quoted from the passage;
- a local instruct model (a GGUF file, through llama.cpp) asked for short questions and answers about each
  passage; an answer is kept only if it is quoted from the passage;
- a file the user imports (JSONL or CSV: question, answer, optional page), matched to its passage.

Pairs are stored in the library (qa_pairs) with the chunk that answers them and the page of the answer.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from core.dataset.question_files import read_records
from core.db import now
from core.errors import Cancelled, KnownError
from core.library.store import Library
from core.progress import QUIET, Work

EXTRACTIVE = "extractive"
MAX_ANSWER = 200  # characters: a short answer, and room for its citation in the reply

# A defined term: “Net Sales” means ..., 1.9 Effective Date shall mean ..., or ... (the “Term”).
_DEFINITION = re.compile(
    r"[“\"]([A-Z][^”\"\n]{1,60})[”\"]\s+(?:shall\s+)?means?\s"
    r"|(?m:^)[ \t]*\d{1,2}(?:\.\d{1,2})*\.?[ \t]+([A-Z][\w-]*(?:[ \t]+[A-Z][\w-]*){0,4})[ \t]+(?:shall[ \t]+)?means?\s"
)
_NAMED = re.compile(r"\((?:the|each|an?|collectively,?)?\s*[“\"]([A-Z][^”\"\n]{1,40})[”\"]\)")
# A section's heading: a number or letter, then a short title in capitals or title case, ended by a full
# stop, a colon, a dash or the line (2.1 Royalties. / 3. ORDERS / 5. Ownership - ... / ARTICLE 4 TERM).
_TITLE_WORD = r"(?:[A-Z][A-Za-z'’/&-]*|of|and|or|the|to|for|in|on|by|with|an?)"
_SECTION = re.compile(
    r"(?m)^[ \t]*(?:(?:ARTICLE|Article|SECTION|Section)[ \t]+)?(\d{1,2}(?:\.\d{1,2})*\.?|[A-Z]\.|[IVX]{1,4}\.)[ \t]+"
    rf"([A-Z][A-Za-z'’/&-]*(?:[ \t]+{_TITLE_WORD}){{0,7}})(?:[ \t]*[.:][ \t]|[ \t]+[-–—][ \t]+|[ \t]*\n)"
)
_SMALL_WORDS = {"of", "and", "or", "the", "to", "for", "in", "on", "by", "with", "a", "an"}
_CLAUSE_LABEL = re.compile(r"\s*(?:\(?[a-zA-Z0-9]{1,3}[.)]|\([a-z0-9]{1,3}\))\s+")
_AMOUNT = re.compile(r"\$\s?\d[\d,.]*(?:\s(?:million|billion))?|\b\d[\d,.]*\s?(?:percent|%)")
_TIME = re.compile(
    r"\b(?:within|after|before|at least|no later than|for a period of)\s+[a-z-]+\s\(\d+\)\s"
    r"(?:days|months|years|business days)"
    r"|\b(?:January|February|March|April|May|June|July|August|September|October|November|December)\s\d{1,2},\s\d{4}"
)
_SENTENCE_END = re.compile(r"[.;](?=\s+[A-Z0-9(“\"]|\s*$)")
_NUMBERED_LINE = re.compile(r"(?m)^[ \t]*\d{1,2}(?:\.\d{1,2})*\.?[ \t]+")  # where a section, or a clause, ends
MIN_ANSWER = 40  # characters: a shorter "first sentence" is a label or a fragment, not an answer


@dataclass(frozen=True)
class Pair:
    question: str
    answer: str  # quoted from the passage, whitespace collapsed
    offset: int  # where the answer starts in the passage's text


def extractive_pairs(text: str) -> list[Pair]:
    """Pairs that the passage itself answers, each answer a sentence of it. The questions ask by topic (a
    defined term, a section's title), as a reader who knows no section numbers would."""
    pairs = []
    for match in _DEFINITION.finditer(text):
        term = match[1] or match[2]
        start = match.start() if match[1] else match.start(2)
        pairs.append(Pair(f"What does “{term}” mean?", _sentence(text, start), start))
    for match in _NAMED.finditer(text):
        start = _sentence_start(text, match.start(), 0)
        pairs.append(Pair(f"What is the “{match[1].removeprefix('the ')}”?", _sentence(text, start), start))
    for match in _SECTION.finditer(text):
        title = " ".join(match[2].split())
        if title.split()[-1].lower() in _SMALL_WORDS:
            continue
        topic = title.lower() if title.isupper() or title.istitle() else title
        label = _CLAUSE_LABEL.match(text, match.end())  # "3. ORDERS / A. Distributor may ...": skip the "A."
        body = label.end() if label else match.end()
        pairs.append(Pair(f"What does the document say about {topic}?", _sentence(text, body), body))
        following = _NUMBERED_LINE.search(text, body)
        section_end = following.start() if following else len(text)
        for pattern, question in ((_AMOUNT, "What amount"), (_TIME, "What date or time limit")):
            found = pattern.search(text, body, section_end)
            if found:
                start = _sentence_start(text, found.start(), body)
                pairs.append(Pair(f"{question} is set for {topic}?", _sentence(text, start), start))
    unique = {pair.question: pair for pair in reversed(pairs) if len(pair.answer) >= MIN_ANSWER}
    return sorted(unique.values(), key=lambda pair: pair.offset)


def _sentence_start(text: str, position: int, floor: int) -> int:
    ends = [m.end() for m in _SENTENCE_END.finditer(text, floor, position)]
    start = ends[-1] if ends else floor
    return len(text) - len(text[start:].lstrip())


def _sentence(text: str, start: int) -> str:
    end = _SENTENCE_END.search(text, start)
    sentence = " ".join(text[start : end.end() if end else len(text)].split())
    if len(sentence) > MAX_ANSWER:
        sentence = sentence[:MAX_ANSWER].rsplit(" ", 1)[0] + " …"
    return sentence


def generate(
    library: Library,
    *,
    source: str = EXTRACTIVE,
    work: Work = QUIET,
) -> int:
    """Make pairs for every chunk of the library from `source` (EXTRACTIVE or a GGUF file), replacing the
    pairs that source made before. One transaction: a cancel keeps the old pairs. Returns the count."""
    make: Callable[[str], list[Pair]]
    if source == EXTRACTIVE:
        make, label = extractive_pairs, EXTRACTIVE
    else:
        make, label = _model_pairs_maker(Path(source)), f"model:{Path(source).name}"
    chunks = list(library.db.query("SELECT id, document_id, start, text FROM chunks ORDER BY id"))
    starts = _page_starts(library)
    rows = []
    for done, chunk in enumerate(chunks, 1):
        if work.cancelled():
            raise Cancelled()
        for pair in make(chunk["text"]):
            page = bisect.bisect_right(starts[chunk["document_id"]], chunk["start"] + pair.offset)
            rows.append(_row(chunk["id"], page, pair.question, pair.answer, label))
        work.progress("making Q&A pairs", done, len(chunks))
    with library.write() as db:
        db.execute("DELETE FROM qa_pairs WHERE source = ?", [label])
        db.table("qa_pairs").insert_all(rows)
    return len(rows)


def import_pairs(library: Library, path: Path) -> tuple[int, int]:
    """Pairs from a JSONL or CSV file (question, answer, optional page), each matched to the passage of the
    library that best contains its answer (on its page, when given). Returns (imported, unmatched)."""
    from core.library.search import search

    label = f"import:{path.name}"
    rows, unmatched = [], 0
    for record in _read_pair_file(path):
        page = record.get("page")
        hits = search(library, f"{record['answer']} {record['question']}", k=10, meaning=False)
        hit = next((h for h in hits if (page is None or page in h.pages) and _holds(h.text, record["answer"])), None)
        if hit is None:
            unmatched += 1
            continue
        rows.append(_row(hit.chunk_id, page or hit.pages[0], record["question"], record["answer"], label))
    with library.write() as db:
        db.execute("DELETE FROM qa_pairs WHERE source = ?", [label])
        db.table("qa_pairs").insert_all(rows)
    return len(rows), unmatched


def _holds(passage: str, answer: str, share: float = 0.6) -> bool:
    """Whether most of the answer's words are in the passage: a passage that merely shares a word with the
    question does not answer it."""
    from core.library.search import query_words

    wanted = query_words(answer)
    present = set(query_words(passage))
    return sum(word in present for word in wanted) >= share * len(wanted)


def _read_pair_file(path: Path) -> Iterator[dict]:
    for number, record in read_records(path, "question file"):
        if not (isinstance(record, dict) and str(record.get("question") or "").strip() and record.get("answer")):
            raise KnownError(f"{path.name} line {number} needs a question and an answer.")
        page = record.get("page")
        try:
            page = int(page) if page not in (None, "") else None
        except (TypeError, ValueError):
            raise KnownError(f"{path.name} line {number}: page must be a number, not {page!r}.") from None
        yield {"question": str(record["question"]).strip(), "answer": str(record["answer"]).strip(), "page": page}


def _model_pairs_maker(model: Path) -> Callable[[str], list[Pair]]:
    if not model.is_file() or model.suffix.lower() != ".gguf":
        raise KnownError(f"The question model {model} is not a GGUF file.")
    from llama_cpp import Llama

    from core.llamacpp import guard_chat_templates, template_renders

    guard_chat_templates()
    try:
        llm = Llama(str(model), n_ctx=2048, verbose=False, seed=0)
    except (ValueError, RuntimeError) as error:
        raise KnownError(f"The question model {model.name} could not be loaded: {error}.") from None
    template = llm.metadata.get("tokenizer.chat_template")
    if template and not template_renders(template):
        raise KnownError(f"The question model {model.name} has a chat template that breaks the sandbox's limits.")

    def make(text: str) -> list[Pair]:
        prompt = (
            "Write three questions a reader might ask about the passage below, each followed by a short answer "
            "copied word for word from the passage. Use the form:\nQ: question\nA: answer\n\nPassage:\n" + text
        )
        reply = llm.create_chat_completion([{"role": "user", "content": prompt}], max_tokens=300, temperature=0.0)
        return model_pairs(reply["choices"][0]["message"]["content"] or "", text)  # type: ignore[index]

    return make


def model_pairs(reply: str, text: str) -> list[Pair]:
    """The Q:/A: pairs of a model's reply whose answer is quoted from the passage (whitespace aside)."""
    flat = " ".join(text.split())
    pairs = []
    for question, answer in re.findall(r"(?m)^\s*Q:\s*(.+?)\s*\n\s*A:\s*(.+?)\s*$", reply):
        answer = " ".join(answer.strip().strip('"“”').split())
        position = flat.find(answer)
        if len(answer) >= 3 and position >= 0:
            pairs.append(Pair(question.strip(), answer[:MAX_ANSWER], _raw_offset(text, position)))
    return pairs


def _raw_offset(text: str, flat_position: int) -> int:
    # The offset in the original text of a position in its whitespace-collapsed form.
    seen = 0
    for match in re.finditer(r"\S+", text):
        if seen + len(match[0]) > flat_position:
            return match.start() + (flat_position - seen)
        seen += len(match[0]) + 1
    return len(text)


def _page_starts(library: Library) -> dict[int, list[int]]:
    starts: dict[int, list[int]] = {}
    for row in library.db.query("SELECT document_id, start FROM pages ORDER BY document_id, number"):
        starts.setdefault(row["document_id"], []).append(row["start"])
    return starts


def _row(chunk_id: int, page: int, question: str, answer: str, source: str) -> dict:
    return {
        "chunk_id": chunk_id,
        "page": page,
        "question": question,
        "answer": answer,
        "source": source,
        "created": now(),
    }
