"""How good an answer is, against a question's expected answer and pages: standard library only, so that
the engine scores checkpoints with exactly the rules the app uses to compare models.

Correctness is 1 when the expected answer's words occur in the answer in order, else the token F1 of the
two (SQuAD's measure); both after normalization, so that "30 days" matches "thirty (30) days". A citation
hits when a page it cites is an expected page. An answer's score is the mean of its correctness and its
citation hit; a model's answer score is the mean over the questions.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

_UNITS = """zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen
    seventeen eighteen nineteen""".split()  # noqa: SIM905  (a word list reads better as text)
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
NUMBER_WORDS = {word: value for value, word in enumerate(_UNITS)} | _TENS | {"hundred": 100, "thousand": 1000}
_NUMBER_WORD = "|".join(sorted(NUMBER_WORDS, key=len, reverse=True))
# Contracts spell a number out and repeat it in digits: "one hundred eighty (180) days".
_SPELLED_THEN_DIGITS = re.compile(rf"\b(?:(?:{_NUMBER_WORD}|and)[\s-]+)+\((\d[\d,.]*)\)")
_ARTICLES = {"a", "an", "the"}


@dataclass(frozen=True)
class AnswerScore:
    correct: float  # 0..1
    cited_right: bool
    words: int

    @property
    def value(self) -> float:
        return (self.correct + self.cited_right) / 2


def normalized_words(text: str) -> list[str]:
    text = _SPELLED_THEN_DIGITS.sub(r"\1", text.lower().replace("’", "'"))
    words = re.findall(r"\d[\d,.]*\d|\d|[a-z]+", text)
    words = [str(NUMBER_WORDS[w]) if w in NUMBER_WORDS else w.replace(",", "") for w in words]
    return [w for w in words if w not in _ARTICLES]


def correctness(answer: str, expected: str) -> float:
    got, want = normalized_words(answer), normalized_words(expected)
    if not want:
        return 0.0
    if any(got[i : i + len(want)] == want for i in range(len(got) - len(want) + 1)):
        return 1.0
    common = sum((Counter(got) & Counter(want)).values())
    if not common:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


def score_answer(
    answer: str, cited: Sequence[tuple[str, Sequence[int]]], expected: str, pages: Sequence[int], document: str | None
) -> AnswerScore:
    """`cited`: the (document, pages) of the answer's kept citations."""
    hit = any(set(cited_pages) & set(pages) and document in (None, name) for name, cited_pages in cited)
    return AnswerScore(correctness(answer, expected), hit, len(answer.split()))


def answer_score(scores: Sequence[AnswerScore]) -> float:
    return sum(s.value for s in scores) / len(scores) if scores else 0.0


def summary(scores: Sequence[AnswerScore]) -> dict[str, float]:
    """A model's (or a checkpoint's) figures over a question set."""
    count = max(len(scores), 1)
    return {
        "answer_score": round(answer_score(scores), 4),
        "cited_right": round(sum(s.cited_right for s in scores) / count, 4),
        "mean_words": round(sum(s.words for s in scores) / count, 1),
    }


def answer_row(question: str, expected: str, answer: str, score: AnswerScore) -> dict[str, object]:
    """One answer as the eval commands show and keep it."""
    return {"question": question, "expected": expected, "answer": answer} | {
        "correct": round(score.correct, 4),
        "cited_right": score.cited_right,
        "words": score.words,
    }
