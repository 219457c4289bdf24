"""Training loop, checkpoints, schedules, EMA and distributed helpers.

Example:
    >>> from largekernel.train import TrainConfig, apply_overrides
    >>> cfg = apply_overrides(TrainConfig(), ["epochs=1", "batch_size=32"])
"""

from largekernel.train.config import TrainConfig, apply_overrides, load_config
from largekernel.train.trainer import Trainer, TrainingInterrupted, evaluate_model, train

__all__ = ["TrainConfig", "apply_overrides", "load_config", "Trainer", "TrainingInterrupted",
           "evaluate_model", "train"]
