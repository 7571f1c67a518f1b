"""Answer quality: the scoring rules, question sets, checkpoints scored by the real engine (greedy answers
of the tiny model with each adapter applied), the best checkpoint chosen by score, and models compared
through llama.cpp."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.answers.evaluation import load_questions
from core.answers.scoring import correctness, normalized_words, score_answer, summary
from core.errors import KnownError
from core.jobs.jobs import Checkpoint, best_checkpoint
from tests.test_cli import tunedesk
from tests.test_jobs import FAST, job_json


@pytest.mark.parametrize(
    ("answer", "expected", "value"),
    [
        ("Payment is due within thirty (30) days of the invoice.", "30 days", 1.0),
        ("within 30 days", "thirty (30) days", 1.0),
        ("one hundred eighty (180) days' written notice", "180 days", 1.0),
        ("The laws of the State of New York.", "New York", 1.0),
        ("Delaware", "New York", 0.0),
        ("", "New York", 0.0),
        ("It is dated 15 April, 2009.", "4/15/09", 1.0),
        ("made on the fifteenth day of April 2009", "4/15/09", 1.0),
        ("effective as of 2009-04-15", "4/15/09", 1.0),
        ("dated April 16, 2009", "4/15/09", 0.0),
        ("The term ends 31/01/2025.", "1/31/25", 1.0),
        ("renews for successive one (1) year terms", "successive 1 year", 1.0),
        ("renews for successive two (2) year terms", "successive 1 year", pytest.approx(4 / 9)),  # F1 only
        ("one hundred eighty days' written notice", "180 days", 1.0),
    ],
)
def test_correctness_after_normalization(answer, expected, value):
    assert correctness(answer, expected) == value


def test_cuad_dates_match_the_way_contracts_write_them():
    pairs = json.loads((Path(__file__).parent / "data" / "cuad_dates.json").read_text())["dates"]
    assert len(pairs) > 30
    assert [(expected, written) for expected, written in pairs if correctness(written, expected) != 1.0] == []


def test_a_yes_question_is_answered_by_quoting_and_citing_its_clause():
    clause = "“Neither party may assign this Agreement without consent.” [c.pdf p. 9]"
    assert score_answer(clause, [("c.pdf", [9])], "Yes", [9], "c.pdf").correct == 1.0
    assert score_answer(clause, [("c.pdf", [3])], "Yes", [9], "c.pdf").correct == 0.0  # the wrong clause
    assert score_answer("Neither party may assign it.", [("c.pdf", [9])], "Yes", [9], "c.pdf").correct == 0.0
    assert score_answer("Yes.", [], "Yes", [9], "c.pdf").correct == 1.0


def test_partial_answers_score_their_token_f1():
    # All 3 answer words are expected (precision 1), 3 of the 5 expected words are answered (recall 0.6).
    assert correctness("York state law", "the State of New York law") == pytest.approx(2 * 0.6 / 1.6)
    assert normalized_words("USD 1,000,000.") == ["usd", "1000000"]


def test_a_citation_hits_only_an_expected_page_of_the_expected_document():
    expected = ("New York", [41], "contract.pdf")
    assert score_answer("New York", [("contract.pdf", [41])], *expected).cited_right
    assert not score_answer("New York", [("contract.pdf", [40])], *expected).cited_right
    assert not score_answer("New York", [("other.pdf", [41])], *expected).cited_right
    assert score_answer("New York [contract.pdf p. 41]", [("contract.pdf", [41])], *expected).value == 1.0


def test_citation_precision_is_the_share_of_cited_pages_that_are_expected():
    expected = ("New York", [41], "contract.pdf")
    both = score_answer("a", [("contract.pdf", [40, 41])], *expected)  # one right page of two
    wrong = score_answer("b", [("contract.pdf", [7])], *expected)
    assert summary([both, wrong])["citation_precision"] == round(1 / 3, 4)
    assert summary([score_answer("c", [], *expected)])["citation_precision"] is None


def test_question_sets_in_jsonl_and_csv(tmp_path):
    jsonl = tmp_path / "q.jsonl"
    jsonl.write_text('{"question": "Who pays?", "answer": "Vyera", "pages": [21, 22]}\n\n')
    csv = tmp_path / "q.csv"
    csv.write_text("question,answer,page,document\nWho pays?,Vyera,21;22,contract.pdf\n")
    (from_jsonl,), (from_csv,) = load_questions(jsonl), load_questions(csv)
    assert from_jsonl.pages == from_csv.pages == (21, 22)
    assert from_csv.document == "contract.pdf"
    bad = tmp_path / "bad.csv"
    bad.write_text("question,answer,page\nWho pays?,Vyera,twenty\n")
    with pytest.raises(KnownError, match=r"bad.csv line 2: pages must be page numbers, not \['twenty'\]"):
        load_questions(bad)
    with pytest.raises(KnownError, match=r"missing\.jsonl cannot be read"):
        load_questions(tmp_path / "missing.jsonl")


def test_the_best_checkpoint_is_the_best_scoring_with_ties_to_the_lower_validation_loss(tmp_path):
    saved = [
        Checkpoint(2, tmp_path, val_loss=3.0, answer_score=0.5),
        Checkpoint(4, tmp_path, val_loss=2.0, answer_score=0.5),
        Checkpoint(6, tmp_path, val_loss=1.0, answer_score=0.25),
    ]
    assert best_checkpoint(saved).step == 4
    unscored = [Checkpoint(c.step, c.path, c.val_loss, None) for c in saved]
    assert best_checkpoint(unscored).step == 6


@pytest.mark.timeout(900)  # three scorings of three checkpoints on a loaded 2-core machine
def test_eval_scores_every_checkpoint_and_chooses_the_best_by_score(data, tmp_path, tiny_base):
    trained = tunedesk(
        "train", "--base", str(tiny_base), "--max-steps", "6", *FAST, "--set", "save_every=2", data_dir=data
    )
    assert trained.returncode == 0, trained.stderr
    # In chat's form, every answer is one of the choices its question allowed: a sentence of a passage in the
    # prompt with that passage's own label, or the abstention.
    scored = tunedesk("eval", "1", "--json", data_dir=data)
    assert scored.returncode == 0, scored.stderr
    items = [json.loads(line) for line in (data / "jobs" / "1" / "eval" / "questions.jsonl").read_text().splitlines()]
    for step in (2, 4, 6):
        said = (data / "jobs" / "1" / "eval" / f"step-{step:06d}.jsonl").read_text().splitlines()
        assert all(json.loads(line)["answer"] in item["choices"] for line, item in zip(said, items, strict=True))

    # The choice of the best checkpoint, on free answers: the toy base learns nothing of the quoted form in
    # six steps, and its checkpoints' choices among the sentences may well agree.
    scored = tunedesk("eval", "1", "--free-text", "--json", data_dir=data)
    assert scored.returncode == 0, scored.stderr
    rows = json.loads(scored.stdout)["rows"]
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert all(
        set(r) >= {"model", "step", "answer_score", "citation_hit", "citation_precision", "mean_words"} for r in rows
    )
    assert [c["answer_score"] for c in job_json(data)["checkpoints"]] == [r["answer_score"] for r in rows]

    # A question set whose expected answers are what step 2 said (where it differs from the last step):
    # step 2 must then score best, though it is neither the last nor the lowest validation loss.
    answers = {
        step: [
            json.loads(line)
            for line in (data / "jobs" / "1" / "eval" / f"step-{step:06d}.jsonl").read_text().splitlines()
        ]
        for step in (2, 6)
    }
    differing = [
        a for a, last in zip(answers[2], answers[6], strict=True) if a["answer"] and a["answer"] != last["answer"]
    ]
    assert differing, "the checkpoints answered alike; the test needs answers that differ"
    questions = tmp_path / "step2.jsonl"
    questions.write_text(
        "".join(json.dumps({"question": a["question"], "answer": a["answer"], "pages": [1]}) + "\n" for a in differing)
    )
    rescored = tunedesk("eval", "1", "--free-text", "--questions", str(questions), "--json", data_dir=data)
    assert rescored.returncode == 0, rescored.stderr
    assert json.loads(rescored.stdout)["best_step"] == 2
    assert job_json(data)["best_step"] == 2
    table = tunedesk("eval", "1", "--free-text", "--questions", str(questions), data_dir=data)
    assert "best: step 2" in table.stdout
