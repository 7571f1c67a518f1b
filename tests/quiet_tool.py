"""`python -m tests.quiet_tool`: an engine tool that says nothing for a minute, as one loading a large model
does (tests/test_jobs.py cancels it)."""

import time

from core.engine import tool

if __name__ == "__main__":
    raise SystemExit(tool.main(lambda: time.sleep(60) or {}))
