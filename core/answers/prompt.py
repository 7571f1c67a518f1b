"""What the model is asked, the same at training time (core/dataset/build.py) and at chat time
(core/answers/chat.py): the system prompt, and the user turn of a grounded question. Standard library only."""

from __future__ import annotations

SYSTEM = "You answer questions about documents from the passages given, quoting them."


def grounded_prompt(passages: list[tuple[str, str]], question: str) -> str:
    """The user turn of a grounded example, at training and at chat time alike: (label, text) passages, the
    question, and the answer's form shown with the first passage's own label: a small model copies a
    placeholder such as [name p. N] as it stands."""
    context = "\n\n".join(f"[{label}]\n{text}" for label, text in passages)
    return f"Passages:\n{context}\n\n{question_turn(question, passages[0][0])}"


def question_turn(question: str, label: str) -> str:
    """The end of a grounded prompt: the question, and the answer's form shown with the best passage's label."""
    form = f"Answer with a short quote from the passage that answers it, then its label, like “...” [{label}]."
    return f"Question: {question}\n{form}"
