"""`python -m core.engine JOB_DIR`: run a job; every outcome ends in events.jsonl as done, cancelled or
error (one sentence), with the details in the log on stderr."""

from __future__ import annotations

import sys
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
        events.write("error", message=str(error))
        return 1
    except ModuleNotFoundError as error:
        events.write("error", message=f"The engine needs {error.name}: install it with pip install 'tunedesk[engine]'.")
        return 1
    except MemoryError:
        events.write("error", message="The engine ran out of memory; try a smaller seq_len or model.")
        return 1
    except Exception as error:
        traceback.print_exc()
        events.write("error", message=f"The engine failed: {type(error).__name__}: {error} (details in engine.log).")
        return 1
    if not any(event["type"] in TERMINAL for event in read_events(events.path)[0][-1:]):
        events.write("error", message="The engine ended without finishing the job.")
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m core.engine JOB_DIR", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(Path(sys.argv[1])))
