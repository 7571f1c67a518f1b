"""`python -m core.engine.lengths BASE DATASET_DIR`: the longest example of a dataset in the base's tokens,
counted as training counts them (the base's tokenizer and chat template, core/engine/data.py), so that the
app refuses a sequence length that cannot hold it before a job starts, not a model load into the job
(core/jobs/jobs.py). One JSON line on stdout (core/engine/tool.py):
    {"type": "done", "longest", "source", "line"} | {"type": "error", "message"} | {"type": "cancelled"}
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from core.engine import tool
from core.engine.data import read_records, tokenize
from core.jobdir import layout


def longest(base: Path, dataset: Path) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from core.models.base_models import check_base_folder

    check_base_folder(base)
    tokenizer = AutoTokenizer.from_pretrained(base, trust_remote_code=False)
    found: dict[str, Any] = {"longest": 0, "source": "", "line": 0}
    for name in (layout.TRAIN, layout.VAL):
        path = dataset / name
        if not path.is_file() or not path.read_text(encoding="utf-8").strip():
            continue
        for example in tokenize(read_records(path), tokenizer, max_len=sys.maxsize, source=name):
            if len(example.ids) > found["longest"]:
                found = {"longest": len(example.ids), "source": name, "line": example.line}
    return found


if __name__ == "__main__":
    sys.exit(tool.main(lambda: longest(Path(sys.argv[1]), Path(sys.argv[2]))))
