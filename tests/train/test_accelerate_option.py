"""``accelerate=true|false`` decides which layers a training run uses (the default job's baseline)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from largekernel.models.registry import create_model
from largekernel.nn import GRN, EngineGRN
from largekernel.nn.conv import ENGINE_CONV_CLASSES
from largekernel.train import TrainConfig, apply_overrides
from largekernel.train.trainer import Trainer


INFO = {"name": "toy", "num_classes": 3, "in_chans": 1, "image_size": 8,
        "class_names": ["a", "b", "c"], "mean": [0.0], "std": [1.0]}


def _data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g))


def _tiny_unireplknet() -> nn.Module:
    return create_model("unireplknet_a", num_classes=3, in_chans=1, depths=(1, 1, 1, 1), dims=(8, 16, 24, 32),
                        kernel_sizes=((3,), (13,), (7,), (3,)), stem_stride=1)


@pytest.mark.parametrize("accelerate", [True, False])
def test_accelerate_flag_selects_engine_or_pytorch_layers(tmp_path, accelerate):
    cfg = apply_overrides(TrainConfig(), [
        f"output={tmp_path / 'run'}", f"accelerate={str(accelerate).lower()}", "epochs=1", "batch_size=8",
        "quiet=true", "plots=false"])
    torch.manual_seed(0)
    trainer = Trainer(cfg, model=_tiny_unireplknet(), train_set=_data(8, 1), eval_set=_data(4, 2), data_info=INFO,
                      model_config={"name": "unireplknet_a", "kwargs": {}})
    try:
        modules = list(trainer.raw_model.modules())
        engine_convs = [m for m in modules if isinstance(m, ENGINE_CONV_CLASSES)]
        grns = [m for m in modules if isinstance(m, GRN)]
        assert grns
        if accelerate:
            assert engine_convs and all(type(m) is EngineGRN for m in grns)
        else:  # the model was built with engine convs; the baseline must not keep them
            assert not engine_convs and all(type(m) is GRN for m in grns)
        trainer.fit()
    finally:
        trainer.close()
