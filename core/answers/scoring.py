"""How good an answer is, against a question's expected answer and pages: standard library only, so that
the engine scores checkpoints with exactly the rules the app uses to compare models.

Correctness is 1 when the expected answer's words occur in the answer in order, or when its numbers and
dates do, each with the word after it ("successive 1 year" is met by "renews for one (1) year terms"), else
the token F1 of the two (SQuAD's measure); both after normalization, so that "30 days" matches "thirty (30) days" and
"one hundred eighty days", and "4/15/09" matches "April 15, 2009" and "the 15th day of April, 2009" (a date
becomes one word, YYYYMMDD). An expected "Yes" is also met by an answer that quotes and cites the clause on
an expected page: CUAD's yes/no questions ask whether a clause exists, and the clause is the answer. A
citation hits when a page it cites is an expected page. An answer's score is the mean of its correctness
and its citation hit; a model's answer score is the mean over the questions.
"""

from __future__ import annotations

import functools
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
_NUMBER_RUN = re.compile(rf"\b(?:{_NUMBER_WORD})(?:(?:[\s-]+|\s+and\s+)(?:{_NUMBER_WORD}))*\b")

_ORDINALS = """first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth
    fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth""".split()  # noqa: SIM905
_ORDINAL_DAYS = (
    {word: n for n, word in enumerate(_ORDINALS, 1)}
    | {
        f"{tens}{sep}{word}": base + n
        for tens, base in (("twenty", 20), ("thirty", 30))
        for sep in ("-", " ")
        for n, word in enumerate(_ORDINALS[:9], 1)
    }
    | {"thirtieth": 30}
)
_ORDINAL_DAY = re.compile(r"\b(" + "|".join(sorted(_ORDINAL_DAYS, key=len, reverse=True)) + r")\b")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH = rf"({'|'.join(_MONTHS)})[a-z]*\.?"
# PDF text splits ordinal suffixes ("15t h day of January"); a day may say "day of".
_DAY = r"(\d{1,2})\s*(?:s\s?t|n\s?d|r\s?d|t\s?h)?"
_DATES = [
    (re.compile(rf"\b{_MONTH}\s+{_DAY}\s*,?\s*(\d{{4}})\b"), ("month", "day", "year")),
    (re.compile(rf"\b{_DAY}\s+(?:day\s+of\s+)?{_MONTH}\s*,?\s*(\d{{4}})\b"), ("day", "month", "year")),
    (re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b"), ("year", "month", "day")),
    (re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4}|\d{2})\b"), ("month", "day", "year")),
]


@dataclass(frozen=True)
class AnswerScore:
    correct: float  # 0..1
    cited_right: bool
    words: int
    pages_cited: int = 0  # (document, page) pairs its kept citations name
    pages_right: int = 0  # of those, the expected ones

    @property
    def value(self) -> float:
        return (self.correct + self.cited_right) / 2


def normalized_words(text: str) -> list[str]:
    text = _ORDINAL_DAY.sub(lambda match: str(_ORDINAL_DAYS[match[1]]), text.lower().replace("’", "'"))
    for pattern, fields in _DATES:
        text = pattern.sub(functools.partial(_date_word, fields), text)
    text = _SPELLED_THEN_DIGITS.sub(r"\1", text)
    text = _NUMBER_RUN.sub(lambda match: str(_number(match[0])), text)
    words = re.findall(r"\d[\d,.]*\d|\d|[a-z]+", text)
    return [w.replace(",", "") for w in words if w not in _ARTICLES]


def _date_word(fields: tuple[str, str, str], match: re.Match[str]) -> str:
    """One word for a date, YYYYMMDD; its parts as words where it is no date (13/45/2020)."""
    parts = dict(zip(fields, match.groups(), strict=True))
    month = parts["month"]
    number = int(month) if month.isdigit() else 1 + _MONTHS.index(month)
    day, year = int(parts["day"]), int(parts["year"])
    if number > 12 and day <= 12:  # day first: 31/01/2025
        number, day = day, number
    if year < 100:  # CUAD's 4/15/09; contracts of the 1990s say 95, 97
        year += 2000 if year < 50 else 1900
    if not (1 <= number <= 12 and 1 <= day <= 31):
        return " ".join(parts.values())
    return f"{year:04d}{number:02d}{day:02d}"


def _number(words: str) -> int:
    """The value of number words: "one hundred eighty" -> 180, "two thousand and five" -> 2005."""
    total = current = 0
    for word in re.split(r"[\s-]+", words):
        if word == "and":
            continue
        value = NUMBER_WORDS[word]
        if value == 100:
            current = max(current, 1) * 100
        elif value == 1000:
            total, current = total + max(current, 1) * 1000, 0
        else:
            current += value
    return total + current


def correctness(answer: str, expected: str) -> float:
    got, want = normalized_words(answer), normalized_words(expected)
    if not want:
        return 0.0
    if _contains(got, want) or (_quantities(want) and all(_contains(got, q) for q in _quantities(want))):
        return 1.0
    common = sum((Counter(got) & Counter(want)).values())
    if not common:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


def _contains(words: list[str], part: list[str]) -> bool:
    return any(words[i : i + len(part)] == part for i in range(len(words) - len(part) + 1))


def _quantities(words: list[str]) -> list[list[str]]:
    """The numbers and dates of an expected answer, each with the unit after it ("1 year" of CUAD's
    "successive 1 year"): where an expected answer has them, they are what an answer must get right."""
    return [words[i : i + 2] for i, word in enumerate(words) if word[0].isdigit()]


def score_answer(
    answer: str, cited: Sequence[tuple[str, Sequence[int]]], expected: str, pages: Sequence[int], document: str | None
) -> AnswerScore:
    """`cited`: the (document, pages) of the answer's kept citations."""
    named = {(name, page) for name, cited_pages in cited for page in cited_pages}
    right = {(name, page) for name, page in named if page in pages and document in (None, name)}
    correct = correctness(answer, expected)
    if normalized_words(expected) == ["yes"] and right and _QUOTE.search(answer):
        correct = 1.0
    return AnswerScore(correct, bool(right), len(answer.split()), len(named), len(right))


_QUOTE = re.compile(r"[“\"][^”\"]{12,}[”\"]")


def answer_score(scores: Sequence[AnswerScore]) -> float:
    return sum(s.value for s in scores) / len(scores) if scores else 0.0


def summary(scores: Sequence[AnswerScore]) -> dict[str, float | None]:
    """A model's (or a checkpoint's) figures over a question set."""
    count = max(len(scores), 1)
    cited = sum(s.pages_cited for s in scores)
    return {
        "answer_score": round(answer_score(scores), 4),
        "cited_right": round(sum(s.cited_right for s in scores) / count, 4),
        # Of all the pages the answers cite, the share that are expected ones; None when none cite.
        "citation_precision": round(sum(s.pages_right for s in scores) / cited, 4) if cited else None,
        "mean_words": round(sum(s.words for s in scores) / count, 1),
    }


def answer_row(question: str, expected: str, answer: str, score: AnswerScore) -> dict[str, object]:
    """One answer as the eval commands show and keep it."""
    return {"question": question, "expected": expected, "answer": answer} | {
        "correct": round(score.correct, 4),
        "cited_right": score.cited_right,
        "words": score.words,
    }
