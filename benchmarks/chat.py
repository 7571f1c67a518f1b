"""Time to first token of `ask` (retrieval, fitting the prompt to the context, the worker process, llama.cpp)
against llama.cpp alone (llama-cpp-python in this process) processing the same prompt and sampling one
token, and with the answer held to its form (core/answers/form.py: llama.cpp's grammar over the passages'
sentences) against free text, all measured in the same run.

    .venv/bin/python benchmarks/chat.py

The model is Mistral-shaped with random weights (export.py's 97M-parameter one, q8_0), so that prompt
processing costs what a small real model's does; the questions are the sample contract's question set, each
the first turn of a new conversation (nothing cached from an earlier turn). Goals: free text at most 1.2x
llama.cpp alone (issue 6); the answer form at most 1.3x free text (issue 30).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import save, verdict
from core import RESOURCES
from core.answers.chat import MAX_TOKENS, PASSAGES, Chat, grounded_messages
from core.library.ingest import add_documents
from core.library.search import search
from core.library.store import Library

QUESTIONS = RESOURCES / "questions" / "license_agreement_50p.jsonl"
EXPORT_BENCHMARK = Path(__file__).with_name("export.py")


def make_gguf(work: Path) -> Path:
    from core.engine import gguf

    subprocess.run([sys.executable, str(EXPORT_BENCHMARK), "--make", str(work)], check=True)
    gguf.convert(work / "base", work / "model-f16.gguf")
    return gguf.quantize(work / "model-f16.gguf", work / "model-q8_0.gguf", "q8_0")


def time_to_first_token(chat: Chat, question: str, max_tokens: int = 1) -> float:
    first: list[float] = []
    started = time.perf_counter()
    chat.ask(question, max_tokens=max_tokens, on_token=lambda _: first or first.append(time.perf_counter()))
    return (first[0] if first else time.perf_counter()) - started


def main() -> None:
    from llama_cpp import Llama

    questions = [json.loads(line)["question"] for line in QUESTIONS.read_text().splitlines()]
    with tempfile.TemporaryDirectory() as tmp, Library(Path(tmp) / "library") as library:
        model = make_gguf(Path(tmp))
        list(add_documents(library, [RESOURCES / "samples" / "license_agreement_50p.pdf"]))
        bare = Llama(str(model), n_ctx=0, verbose=False, seed=0)
        ours_s, bare_s, free_s, formed_s, prompt_tokens = [], [], [], [], []
        for question in questions:  # alternated, so that a busy moment hurts both
            messages = grounded_messages(question, search(library, question, k=PASSAGES))
            bare.reset()
            started = time.perf_counter()
            reply = bare.create_chat_completion(messages, max_tokens=1, temperature=0.0)
            bare_s.append(time.perf_counter() - started)
            prompt_tokens.append(reply["usage"]["prompt_tokens"])

            with Chat(library, model, free_text=True) as chat:
                ours_s.append(time_to_first_token(chat, question))
            with Chat(library, model, free_text=True) as chat:  # the answer's whole room, as the form has
                free_s.append(time_to_first_token(chat, question, max_tokens=MAX_TOKENS))
            with Chat(library, model) as chat:
                formed_s.append(time_to_first_token(chat, question, max_tokens=MAX_TOKENS))
    ratio = statistics.median(ours_s) / statistics.median(bare_s)
    formed_ratio = statistics.median(formed_s) / statistics.median(free_s)
    numbers = {
        "questions": len(questions),
        "median_prompt_tokens": statistics.median(prompt_tokens),
        "ours_median_ttft_s": round(statistics.median(ours_s), 4),
        "bare_llama_cpp_median_s": round(statistics.median(bare_s), 4),
        "ratio": round(ratio, 3),
        "free_text_median_ttft_s": round(statistics.median(free_s), 4),
        "answer_form_median_ttft_s": round(statistics.median(formed_s), 4),
        "answer_form_ratio": round(formed_ratio, 3),
    }
    print(json.dumps(numbers, indent=2))
    save("chat", numbers)
    verdict(
        "chat_ttft",
        f"time to first token {ratio:.2f}x llama.cpp's bare prompt processing",
        "at most 1.2x",
        ratio <= 1.2,
    )
    verdict(
        "chat_answer_form_ttft",
        f"time to first token in the answer form {formed_ratio:.2f}x free text's",
        "at most 1.3x",
        formed_ratio <= 1.3,
    )


if __name__ == "__main__":
    main()
