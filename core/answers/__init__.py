"""Answers: grounded chat, citation checks, answer scoring and the scoring of a job's checkpoints."""
