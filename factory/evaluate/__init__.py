"""Validate a student: freeze a suite of held-out records, run a model on it, score it with the checks.

suite.py freezes the test split of a run (the prompts, the plan, the reference replies) into one
JSONL file with a sha256, so every model is scored on the same items. This package imports the
checks, never generation.
"""
