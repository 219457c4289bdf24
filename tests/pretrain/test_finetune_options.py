"""Fine-tuning options added for few-label experiments: ``layer_decay``, ``train_subset_per_class``,
and the pre-training model's data-parallel mask slices and grad checkpointing."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import largekernel
from largekernel.pretrain import PretrainConfig, build_masked_image_model
from largekernel.pretrain.fewlabel import first_per_class
from largekernel.pretrain.layer_decay import apply_layer_decay, layer_depths
from largekernel.train.schedule import WarmupCosineSchedule

TINY = dict(in_chans=1, depths=[1, 2, 1, 1], dims=[8, 16, 16, 16], kernel_sizes=[[3], [13, 13], [7], [3]],
            stem_stride=1)


def _expected_depth(name: str) -> int:
    """Forward-order block depth written out by hand for depths [1, 2, 1, 1] (stem 0, head 6)."""
    parts = name.split(".")
    if parts[0] == "downsample_layers":
        return {0: 0, 1: 1, 2: 3, 3: 4}[int(parts[1])]
    if parts[0] == "stages":
        first = {0: 1, 1: 2, 2: 4, 3: 5}[int(parts[1])]
        return first + int(parts[2])
    return 6


def test_layer_depths_follow_the_forward_order():
    model = largekernel.create_model("unireplknet_a", num_classes=10, **TINY)
    depths, head = layer_depths(model)
    assert head == 6
    assert {n: _expected_depth(n) for n, _ in model.named_parameters()} == depths


def test_layer_decay_scales_each_update_by_decay_to_the_distance_from_the_head():
    torch.manual_seed(0)
    model = largekernel.create_model("unireplknet_a", num_classes=10, **TINY)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # plain SGD: the update is exactly -lr * scale * grad
    opt = torch.optim.SGD([{"params": [p for n, p in model.named_parameters() if "gamma" not in n]},
                           {"params": [p for n, p in model.named_parameters() if "gamma" in n]}], lr=0.1)
    apply_layer_decay(opt, model, 0.5)
    assert opt.param_groups[0]["lr_scale"] == 1.0  # head first: the logged lr is the peak lr
    assert sum(len(g["params"]) for g in opt.param_groups) == len(before)
    WarmupCosineSchedule(opt, base_lr=0.1, total_steps=10, warmup_steps=0, min_lr=0.0).apply(0)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    for name, p in model.named_parameters():
        expected = before[name] - 0.1 * 0.5 ** (6 - _expected_depth(name))
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-7, msg=name)


def test_layer_decay_rejects_bad_values_and_unknown_layouts():
    model = largekernel.create_model("unireplknet_a", num_classes=10, **TINY)
    for bad in (0.0, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match="layer_decay must be a number in"):
            apply_layer_decay(torch.optim.SGD(model.parameters(), lr=0.1), model, bad)
    with pytest.raises(ValueError, match="no stages.<i>.<j> blocks"):
        layer_depths(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Linear(2, 2)))


def test_train_config_layer_decay_reaches_the_optimiser(tmp_path):
    from largekernel.train import TrainConfig
    from largekernel.train.trainer import Trainer

    cfg = TrainConfig(model="unireplknet_a", model_kwargs={k: v for k, v in TINY.items() if k != "in_chans"},
                      data="digits", image_size=32, train_subset_per_class=2, batch_size=4, max_steps=1,
                      layer_decay=0.5, lr=1e-3, threads=1, quiet=True, plots=False, output=str(tmp_path),
                      accelerate=False)
    trainer = Trainer(cfg)
    try:
        scales = sorted({g["lr_scale"] for g in trainer.optimizer.param_groups})
        assert scales == [0.5 ** k for k in range(6, -1, -1)]
        labels = [trainer.train_set[i][1] for i in range(len(trainer.train_set))]
        assert sorted(labels) == sorted(list(range(10)) * 2)  # two of every class
    finally:
        trainer.close()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 4), max_size=40), st.integers(1, 5))
def test_first_per_class_matches_a_counting_loop(labels, n):
    data = [(None, c) for c in labels]
    expected, seen = [], {}
    for i, c in enumerate(labels):
        seen[c] = seen.get(c, 0) + 1
        if seen[c] <= n:
            expected.append(i)
    assert first_per_class(data, n) == expected


def test_first_per_class_rejects_bad_n():
    with pytest.raises(ValueError, match="train_subset_per_class must be a positive int"):
        first_per_class([(None, 0)], 0)


def test_pretrain_config_rejects_fine_tuning_options():
    for key, value in (("layer_decay", 0.8), ("init_from", "runs/mim")):
        with pytest.raises(ValueError, match=f"{key} is a fine-tuning option"):
            PretrainConfig(**{key: value}).validate()


def test_mask_shards_are_slices_of_the_global_batch_masks():
    mim = build_masked_image_model("unireplknet_a", {**TINY, "depths": [1, 1, 1, 1],
                                                     "kernel_sizes": [[3], [13], [7], [3]]}, mask_ratio=0.5)
    x = torch.zeros(3, 1, 32, 32)
    whole = mim.random_mask(torch.zeros(6, 1, 32, 32), generator=torch.Generator().manual_seed(5))
    parts = []
    for rank in (0, 1):
        mim.mask_shard = (rank, 2)
        parts.append(mim.random_mask(x, generator=torch.Generator().manual_seed(5)))
    assert torch.equal(torch.cat(parts), whole) and not torch.equal(parts[0], parts[1])


def test_grad_checkpointing_reaches_the_backbone():
    mim = build_masked_image_model("unireplknet_a", {**TINY, "depths": [1, 1, 1, 1],
                                                     "kernel_sizes": [[3], [13], [7], [3]]})
    assert not mim.encoder.backbone.grad_checkpointing
    mim.set_grad_checkpointing(True)
    assert mim.encoder.backbone.grad_checkpointing


def test_grad_checkpointing_without_backbone_support_is_a_clear_error(monkeypatch):
    mim = build_masked_image_model("unireplknet_a", {**TINY, "depths": [1, 1, 1, 1],
                                                     "kernel_sizes": [[3], [13], [7], [3]]})
    monkeypatch.setattr(mim.encoder, "backbone", torch.nn.Identity())
    with pytest.raises(ValueError, match="Identity does not support grad_checkpointing"):
        mim.set_grad_checkpointing(True)
