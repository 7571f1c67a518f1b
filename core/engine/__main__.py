"""`python -m core.engine JOB_DIR`: run a job; every outcome ends in events.jsonl as done, cancelled or
error (one sentence), with the details in the log on stderr.

Under torchrun (core/engine/launch.py) every process runs this. Process 0 writes the events of the job's
course; a failure's sentence goes to the error file torchrun gives each process, and the launcher writes
the one that caused the others."""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

from core.errors import KnownError
from core.jobdir.events import TERMINAL, EventLog, read_events


def main(job_dir: Path) -> int:
    events = EventLog(job_dir)
    try:
        from core import versions
        from core.engine.train import run

        versions.check(versions.ENGINE)
        run(job_dir)
    except KnownError as error:
        return _failed(events, str(error))
    except ModuleNotFoundError as error:
        return _failed(events, f"The engine needs {error.name}: install it with pip install 'tunedesk[engine]'.")
    except MemoryError:
        return _failed(events, "The engine ran out of memory; try a smaller seq_len or model.")
    except Exception as error:
        traceback.print_exc()
        return _failed(events, f"The engine failed: {type(error).__name__}: {error} (details in engine.log).")
    if int(os.environ.get("RANK", 0)) == 0 and not any(
        event.type in TERMINAL for event in read_events(events.path)[0][-1:]
    ):
        return _failed(events, "The engine ended without finishing the job.")
    return 0


def _failed(events: EventLog, message: str) -> int:
    if error_file := os.environ.get("TORCHELASTIC_ERROR_FILE"):
        Path(error_file).write_text(json.dumps({"message": message, "timestamp": int(time.time())}))
    else:
        events.write("error", message=message)
    print(message, file=sys.stderr)
    return 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m core.engine JOB_DIR", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(Path(sys.argv[1])))
