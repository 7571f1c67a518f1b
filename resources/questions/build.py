"""Build license_agreement_50p.jsonl, the sample contract's question set, from CUAD's expert annotations
(resources/samples/license_agreement_50p.cuad_annotations.json, CC BY 4.0).

    .venv/bin/python resources/questions/build.py

Each line: a question for one CUAD clause category, the expected answer (CUAD's short answer where it gives
one, else the clause's first sentence), and the expected pages: the pages of the sample PDF whose text holds
a part of the annotated clause. Where CUAD's short answer is only yes or no, the clause's first sentence is the
expected answer.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

from core import RESOURCES  # noqa: E402

QUESTIONS = {
    "Parties": "Who are the parties to the agreement?",
    "Agreement Date": "When was the agreement made?",
    "Expiration Date": "When does the agreement expire?",
    "Governing Law": "Which state's law governs the agreement?",
    "Non-Compete": "Is there a restriction on competing products?",
    "Exclusivity": "Is the license exclusive?",
    "Termination For Convenience": "Can a party terminate the agreement for convenience?",
    "Change Of Control": "What happens on a change of control of a party?",
    "Anti-Assignment": "Can a party assign the agreement to someone else?",
    "Revenue/Profit Sharing": "What royalties does Vyera pay on net sales?",
    "Minimum Commitment": "Is there a minimum sales commitment?",
    "Ip Ownership Assignment": "Who owns the inventions and intellectual property that Vyera makes?",
    "License Grant": "What license does CytoDyn grant to Vyera?",
    "Non-Transferable License": "Can the licenses be transferred?",
    "Post-Termination Services": "What must the parties do after the agreement is terminated?",
    "Audit Rights": "Can a party audit the other party's records?",
    "Uncapped Liability": "Which liabilities are not limited?",
    "Cap On Liability": "Is a party's liability capped?",
    "Insurance": "What insurance must the parties maintain?",
    "Covenant Not To Sue": "Can Vyera challenge CytoDyn's patents?",
}


def normalized(text: str) -> str:
    return " ".join(re.sub(r"[^\w$%]+", " ", text.lower()).split())


def main() -> None:
    from core.library.extract import extract

    annotations = json.loads((RESOURCES / "samples" / "license_agreement_50p.cuad_annotations.json").read_text())
    pages = [normalized(page) for page in extract(RESOURCES / "samples" / "license_agreement_50p.pdf").pages]
    lines = []
    for category, question in QUESTIONS.items():
        clauses = ast.literal_eval(annotations.get(category) or "[]")
        expected: set[int] = set()
        # CUAD elides the middle of a long clause: each kept part counts, since the part that answers the
        # question ("(c) at any time ... for any reason") may sit pages after the clause's lead-in.
        for part in (part for clause in clauses for part in clause.split("<omitted>")):
            probe = normalized(part)[:80]
            expected |= {number for number, page in enumerate(pages, 1) if probe and probe in page}
        if not expected:
            continue
        answer = annotations.get(f"{category}-Answer") or ""
        if answer in ("", "Yes", "No"):  # a yes/no says little: the clause itself is the answer to find
            answer = " ".join(re.split(r"(?<=[.;])\s", clauses[0].split("<omitted>")[0])[0].split())[:300]
        lines.append({"question": question, "answer": answer, "pages": sorted(expected), "category": category})
    out = Path(__file__).with_name("license_agreement_50p.jsonl")
    out.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    print(f"{len(lines)} questions -> {out}")


if __name__ == "__main__":
    main()
