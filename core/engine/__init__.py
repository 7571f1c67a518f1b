"""The engine: everything that needs torch (train, merge, convert), run as its own process on a job
directory (`python -m core.engine JOB_DIR`). It never touches the library; it reads job.json and the
dataset, and reports through events.jsonl (core/jobdir/events.py). Nothing here imports torch at import time
except the modules that train."""
