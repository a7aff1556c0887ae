"""Evaluation of a served model against prepared ALR rows: `soundmind eval` (see `cli.py`)."""
