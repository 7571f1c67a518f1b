"""Runners start the engine on a job directory somewhere (this machine, or a remote host) and report
whether it is still alive; events.jsonl, read by core/jobs.py, says everything else."""
