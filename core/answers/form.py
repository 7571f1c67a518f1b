"""The answer's form, the same for chat (llama.cpp, core/answers/chat_worker.py) and checkpoint scoring (the
engine, torch): a verbatim sentence of one passage in the prompt followed by that passage's own label. With
no passage, the answer is the abstention "The documents do not say." and no model runs. Standard library
only, shared like citations.py.

The abstention is not among the choices: offered beside the quotes, SmolLM2 took it for every question (its
first token, "The", is far likelier than an opening quote mark to a model not yet taught the form), scoring
0 where quoting scores. Abstaining when the choice is unsure needs a calibrated confidence, not a choice.

A small model cannot be trusted to compose a label character by character, or to copy a sentence without
slips; it can be made to choose (ReClaim's method): a label can only follow text of its own passage, so every
citation is on its page by construction, and the model's whole job is to pick the right sentence. llama.cpp
holds chat to the choices with a grammar (`grammar`), which admits any tokenization of them; torch's
generate, in checkpoint scoring, with a prefix tree over their tokens (`Choices`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

ABSTAIN = "The documents do not say."
LONGEST = 240  # characters of one quoted clause: about 40 words, the length goal of an answer
_SENTENCE_END = re.compile(r"(?<=[.;:!?])\s+|\n\s*\n")
_CLAUSE_END = re.compile(r"(?<=[,;])\s+")
_SINGLE_QUOTES = str.maketrans({"“": "‘", "”": "’", '"': "'"})


def quoted(text: str, label: str) -> str:
    """A quote and its label, as answers are written and taught: the quote in double quotes, its own quotation
    marks made single (a model taught “““ learns to repeat it), whitespace as one space. The citation check
    reads all quote marks and whitespace alike."""
    return f"“{' '.join(text.split()).translate(_SINGLE_QUOTES)}” [{label}]"


def sentences(text: str) -> list[str]:
    """A passage's sentences, each a clause at most LONGEST characters long (a long one is cut at its commas
    and semicolons, and hard at LONGEST where it has none)."""
    found = []
    for sentence in _SENTENCE_END.split(text):
        sentence = " ".join(sentence.split())
        while len(sentence) > LONGEST:
            cut = max((m.start() for m in _CLAUSE_END.finditer(sentence, 0, LONGEST)), default=LONGEST)
            found.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sum(any(c.isalpha() for c in word) for word in sentence.split()) >= 3:
            found.append(sentence)  # not a heading ("[***] 14.2 Governing Law."), a number or a stray word
    return found


def choices(passages: Sequence[tuple[str, str]]) -> list[str]:
    """Every answer the form allows for these (label, text) passages: each sentence quoted with its own
    passage's label; the abstention alone where they have no sentence."""
    return list(dict.fromkeys(quoted(s, label) for label, text in passages for s in sentences(text))) or [ABSTAIN]


def fitting(allowed: Sequence[str], lengths: Sequence[int], room: int) -> list[str]:
    """The choices whose token `lengths` fit in `room`; the shortest where none does (cut, it is not a
    supported answer, but an answer)."""
    fits = [text for text, length in zip(allowed, lengths, strict=True) if length < room]
    return fits or [min(zip(allowed, lengths, strict=True), key=lambda pair: pair[1])[0]]


def sentence_with(text: str, answer: str) -> str | None:
    """The sentence of `text` where `answer` begins (whitespace, case and quote marks aside), as a training
    example's answer: the choice the model is taught to make."""
    start = _plain(answer.removesuffix("…"))[:40]
    plain = _plain(text)
    found = plain.find(start) if start else -1
    if found < 0:
        return None
    end = 0
    for sentence in sentences(text):
        end = plain.find(_plain(sentence), end) + len(_plain(sentence))
        if end > found:
            return sentence
    return None


def _plain(text: str) -> str:
    return " ".join(text.translate(_ALL_QUOTES).lower().split())


_ALL_QUOTES = str.maketrans({"“": "'", "”": "'", "‘": "'", "’": "'", '"': "'"})


def quote_top_hit(question: str, passages: Sequence[tuple[str, str]]) -> str:
    """The answer with no model at all, the baseline a tuned model must beat: the first passage's sentence
    that shares the most words with the question, quoted with that passage's label."""
    if not passages:
        return ABSTAIN
    label, text = passages[0]
    asked = _words(question)
    best = max(sentences(text), key=lambda s: len(asked & _words(s)), default=None)
    return quoted(best, label) if best else ABSTAIN


def _words(text: str) -> set[str]:
    return {word for word in re.findall(r"[a-z0-9]+", text.lower()) if len(word) > 2}


def grammar(allowed: Sequence[str]) -> str:
    """A GBNF grammar whose only sentences are `allowed`, for llama.cpp: it admits every tokenization of
    them, so the model writes a choice with the tokens it would have chosen for it."""
    escapes = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})
    return "root ::= " + " | ".join(f'"{text.translate(escapes)}"' for text in allowed) + "\n"


class Choices:
    """A prefix tree over the token ids of the allowed answers, for torch's generate: which tokens may come
    next after those generated so far. Once an answer is complete, only `end` (the end-of-turn token) may
    follow."""

    def __init__(self, answers: Sequence[Sequence[int]], end: int) -> None:
        self.end = end
        self.root: dict[int, dict] = {}
        for ids in answers:
            node = self.root
            for token in ids:
                node = node.setdefault(token, {})
            node[end] = {}

    def allowed(self, generated: Sequence[int]) -> list[int]:
        node = self.root
        for token in generated:
            if token == self.end or token not in node:
                return [self.end]  # ended, or off the tree (cannot happen while it is enforced)
            node = node[token]
        return list(node) or [self.end]
