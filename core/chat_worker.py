"""`python -m core.chat_worker MODEL.gguf`: llama.cpp in a process of its own, so that a model file that
crashes llama.cpp takes down only this worker, never the app.

Protocol, one JSON object a line. In: {"messages": [...], "max_tokens": N}. Out: {"type": "loaded"}, then
for each request {"type": "token", "text"} ... {"type": "done", "text", "tokens_per_s"}, or
{"type": "error", "message"}.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def say(kind: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"type": kind} | fields) + "\n")
    sys.stdout.flush()


def answer(llm: Any, request: dict[str, Any]) -> None:
    started = time.perf_counter()
    pieces: list[str] = []
    stream = llm.create_chat_completion(
        request["messages"], max_tokens=request.get("max_tokens", 200), temperature=0.0, stream=True
    )
    for chunk in stream:
        text = chunk["choices"][0]["delta"].get("content")
        if isinstance(text, str) and text:
            pieces.append(text)
            say("token", text=text)
    seconds = time.perf_counter() - started
    tokens = len(llm.tokenize("".join(pieces).encode(), add_bos=False)) if pieces else 0
    say("done", text="".join(pieces), tokens_per_s=round(tokens / seconds, 1) if seconds else 0.0)


def main(model: str) -> int:
    from llama_cpp import Llama

    try:
        llm = Llama(model, n_ctx=0, verbose=False, seed=0)  # 0: the context the model was trained for
    except (ValueError, RuntimeError) as error:
        say("error", message=str(error))
        return 1
    from core.engine.gguf import template_renders

    template = llm.metadata.get("tokenizer.chat_template")
    if template and not template_renders(template):
        # A template that reaches outside the sandbox is never used: Mistral's built-in format is.
        llm.chat_handler = None
        llm.chat_format = "mistral-instruct"
        say("warning", message="its chat template tries to reach outside Jinja's sandbox; a built-in template is used")
    say("loaded", n_ctx=llm.n_ctx())
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer(llm, request)
        except ValueError as error:  # a prompt longer than the context, say
            say("error", message=str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
