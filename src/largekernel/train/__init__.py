"""Training loop, checkpoints, schedules, EMA and distributed helpers."""
