"""`python -m core.answers.chat_worker MODEL.gguf`: llama.cpp in a process of its own, so that a model file that
crashes llama.cpp takes down only this worker, never the app.

Protocol, one JSON object a line. Out first: {"type": "loaded", "n_ctx"}. Then, for each request:
    {"messages": [...], "max_tokens": N, "choices": [...]?}
                                         -> {"type": "token", "text"} ...
                                            {"type": "done", "text", "tokens_per_s", "reused_tokens", "stopped"}
    {"count": ["text", ...]}             -> {"type": "counts", "counts": [N, ...]}   (tokens of each text)
or {"type": "error", "message"}. SIGINT stops the reply being generated; the worker goes on.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any

from core.lifetime import end_with_parent

# Set by SIGINT, the app's stop, and read between tokens: a token is sent and kept whole or not at all (an
# exception raised inside the loop could fall between the two and lose one).
_stop = threading.Event()


def say(kind: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"type": kind} | fields) + "\n")
    sys.stdout.flush()


def answer(llm: Any, request: dict[str, Any]) -> None:
    started = time.perf_counter()
    before = list(llm.eval_tokens)  # what llama.cpp holds evaluated from the previous request
    pieces: list[str] = []
    stopped = False
    max_tokens = request.get("max_tokens", 200)
    constrained = _only(llm, request["choices"], max_tokens) if request.get("choices") else None
    stream = llm.create_chat_completion(
        request["messages"], max_tokens=max_tokens, temperature=0.0, stream=True, grammar=constrained
    )
    for chunk in stream:
        if _stop.is_set():
            stopped = True
            break
        text = chunk["choices"][0]["delta"].get("content")
        if isinstance(text, str) and text:
            pieces.append(text)
            say("token", text=text)
    seconds = time.perf_counter() - started
    tokens = len(llm.tokenize("".join(pieces).encode(), add_bos=False)) if pieces else 0
    # llama-cpp-python evaluates only the prompt after its longest common prefix with the tokens it holds.
    after = list(llm.eval_tokens)
    pairs = zip(before, after, strict=False)
    reused = next((n for n, (a, b) in enumerate(pairs) if a != b), min(len(before), len(after)))
    say(
        "done",
        text="".join(pieces),
        tokens_per_s=round(tokens / seconds, 1) if seconds else 0.0,
        reused_tokens=reused,
        stopped=stopped,
    )


def _only(llm: Any, choices: list[str], max_tokens: int) -> Any:
    """A grammar that lets the reply be only one of `choices` (core/answers/form.py) that fits in it."""
    from llama_cpp import LlamaGrammar

    from core.answers.form import fitting, grammar

    lengths = [len(llm.tokenize(text.encode(), add_bos=False)) for text in choices]
    return LlamaGrammar.from_string(grammar(fitting(choices, lengths, max_tokens)), verbose=False)


def main(model: str) -> int:
    from llama_cpp import Llama

    from core.llamacpp import guard_chat_templates, template_renders

    end_with_parent(lambda: os._exit(1))  # nothing of a worker's needs saving
    guard_chat_templates()
    try:
        llm = Llama(model, n_ctx=0, verbose=False, seed=0)  # 0: the context the model was trained for
    except (ValueError, RuntimeError) as error:
        say("error", message=str(error))
        return 1
    template = llm.metadata.get("tokenizer.chat_template")
    if template and not template_renders(template):
        # A template that reaches outside the sandbox or past its limits is never used: Mistral's built-in
        # format is. One that passes and then breaks them on a longer conversation fails that request alone.
        llm.chat_handler = None
        llm.chat_format = "mistral-instruct"
        say("warning", message="its chat template breaks the sandbox's rules or limits; a built-in template is used")
    say("loaded", n_ctx=llm.n_ctx())
    signal.signal(signal.SIGINT, lambda *_: _stop.set())
    for line in sys.stdin:
        request = json.loads(line)
        if "count" in request:
            say("counts", counts=[len(llm.tokenize(text.encode(), add_bos=False)) for text in request["count"]])
            continue
        _stop.clear()  # a stop that arrived between replies stops nothing
        try:
            answer(llm, request)
        except ValueError as error:  # a prompt longer than the context, say
            say("error", message=str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
