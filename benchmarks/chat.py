"""Time to first token of `ask` (retrieval, fitting the prompt to the context, the worker process, llama.cpp)
against llama.cpp alone (llama-cpp-python in this process) processing the same prompt and sampling one
token, measured in the same run.

    .venv/bin/python benchmarks/chat.py

The model is Mistral-shaped with random weights (export.py's 97M-parameter one, q8_0), so that prompt
processing costs what a small real model's does; the questions are the sample contract's question set, each
the first turn of a new conversation (nothing cached from an earlier turn). Goal (issue 6): at most 1.2x.
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
from core.answers.chat import PASSAGES, Chat, grounded_messages
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


def time_to_first_token(chat: Chat, question: str) -> float:
    first: list[float] = []
    started = time.perf_counter()
    chat.ask(question, max_tokens=1, on_token=lambda _: first or first.append(time.perf_counter()))
    return (first[0] if first else time.perf_counter()) - started


def main() -> None:
    from llama_cpp import Llama

    questions = [json.loads(line)["question"] for line in QUESTIONS.read_text().splitlines()]
    with tempfile.TemporaryDirectory() as tmp, Library(Path(tmp) / "library") as library:
        model = make_gguf(Path(tmp))
        list(add_documents(library, [RESOURCES / "samples" / "license_agreement_50p.pdf"]))
        bare = Llama(str(model), n_ctx=0, verbose=False, seed=0)
        ours_s, bare_s, prompt_tokens = [], [], []
        for question in questions:  # alternated, so that a busy moment hurts both
            messages = grounded_messages(question, search(library, question, k=PASSAGES))
            bare.reset()
            started = time.perf_counter()
            reply = bare.create_chat_completion(messages, max_tokens=1, temperature=0.0)
            bare_s.append(time.perf_counter() - started)
            prompt_tokens.append(reply["usage"]["prompt_tokens"])

            with Chat(library, model) as chat:
                ours_s.append(time_to_first_token(chat, question))
    ratio = statistics.median(ours_s) / statistics.median(bare_s)
    numbers = {
        "questions": len(questions),
        "median_prompt_tokens": statistics.median(prompt_tokens),
        "ours_median_ttft_s": round(statistics.median(ours_s), 4),
        "bare_llama_cpp_median_s": round(statistics.median(bare_s), 4),
        "ratio": round(ratio, 3),
    }
    print(json.dumps(numbers, indent=2))
    save("chat", numbers)
    verdict(
        "chat_ttft",
        f"time to first token {ratio:.2f}x llama.cpp's bare prompt processing",
        "at most 1.2x",
        ratio <= 1.2,
    )


if __name__ == "__main__":
    main()
