"""Pre-training runs: exact resume, artefacts, the exported encoder and `train --init-from`."""

from __future__ import annotations

import json

import pytest
import torch

import largekernel
from largekernel.cli import main
from largekernel.pretrain import ENCODER_NAME, PretrainConfig, PretrainTrainer, load_pretrained_encoder
from largekernel.train import checkpointing as ckpt

TINY = dict(depths=[1, 1, 1, 1], dims=[8, 16, 16, 16], kernel_sizes=[[3], [13], [7], [3]], stem_stride=1)


def _cfg(out, **over) -> PretrainConfig:
    base = dict(model="unireplknet_a", model_kwargs=dict(TINY), data="digits", image_size=32, train_subset=48,
                eval_subset=16, batch_size=16, epochs=2, lr=2e-3, warmup_epochs=0.5, threads=1, quiet=True,
                output=str(out), recon_images=2, mask_ratio=0.6, decoder_width=16, keep_checkpoints=10)
    base.update(over)
    return PretrainConfig(**base)


def _run(cfg, resume_from=None):
    trainer = PretrainTrainer(cfg)
    try:
        if resume_from is not None:
            assert trainer.resume(resume_from)
        trainer.fit()
        return {k: v.clone() for k, v in trainer.raw_model.state_dict().items()}, trainer
    finally:
        trainer.close()


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mim_full")
    state, trainer = _run(_cfg(out, checkpoint_every=2, plots=True))
    return out, state, trainer


def test_resume_mid_epoch_is_bit_exact(full_run, tmp_path):
    out, state, _ = full_run
    # 3 steps per epoch, 6 in all: step 2 is in the middle of epoch 1 (masks come from the restored RNG)
    mid = out / ckpt.CHECKPOINT_DIR / "step_00000002.pt"
    assert mid.is_file()
    resumed, trainer = _run(_cfg(tmp_path / "resumed", checkpoint_every=2, plots=False), resume_from=mid)
    assert trainer.step == 6
    assert state.keys() == resumed.keys()
    for key in state:
        assert torch.equal(state[key], resumed[key]), key


def test_artefacts_and_exported_encoder(full_run):
    out, state, trainer = full_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["final"]["loss"] > 0
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert (out / "reconstructions" / "epoch_002.png").stat().st_size > 1000
    # the encoder file is an ordinary checkpoint of the features_only backbone
    enc = largekernel.create_model_from(out / ENCODER_NAME)
    assert enc.features_only
    for key, value in enc.state_dict().items():
        assert torch.equal(value, state[f"encoder.backbone.{key}"]), key


def test_init_from_loads_backbone_keeps_fresh_head(full_run):
    out, state, _ = full_run
    torch.manual_seed(0)
    model = largekernel.create_model("unireplknet_a", num_classes=10, in_chans=1, **TINY)
    fresh_head = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("head.", "norm."))}
    load_pretrained_encoder(model, out)  # a run directory works too
    for key, value in model.state_dict().items():
        if key in fresh_head:
            assert torch.equal(value, fresh_head[key]), key
        else:
            assert torch.equal(value, state[f"encoder.backbone.{key}"]), key


def test_init_from_is_strict_about_the_backbone(full_run, tmp_path):
    out, _, _ = full_run
    other = largekernel.create_model("unireplknet_a", num_classes=10, in_chans=1, **{**TINY, "dims": [8, 16, 16, 32]})
    with pytest.raises(ValueError, match="different model options.*dims"):
        load_pretrained_encoder(other, out / ENCODER_NAME)
    with pytest.raises(ValueError, match="holds a 'unireplknet_a' encoder"):
        load_pretrained_encoder(largekernel.create_model("convnext_atto", num_classes=10), out)
    with pytest.raises(FileNotFoundError, match="no pre-trained checkpoint"):
        load_pretrained_encoder(other, tmp_path / "missing.safetensors")
    # a state dict without our config: a missing backbone tensor is named
    state = dict(largekernel.create_model("unireplknet_a", features_only=True, in_chans=1, **TINY).state_dict())
    dropped = sorted(state)[3]
    del state[dropped]
    torch.save(state, tmp_path / "partial.pt")
    model = largekernel.create_model("unireplknet_a", num_classes=10, in_chans=1, **TINY)
    with pytest.raises(ValueError, match=f"missing: {dropped}"):
        load_pretrained_encoder(model, tmp_path / "partial.pt")


def test_train_cli_init_from(full_run, tmp_path):
    out, state, _ = full_run
    kw = json.dumps(TINY)
    code = main(["train", "--model", "unireplknet_a", "--model-kwargs", kw, "--init-from", str(out / ENCODER_NAME),
                 "--output", str(tmp_path / "ft"), "--max-steps", "1", "--batch-size", "8", "--train-subset", "16",
                 "--eval-subset", "8", "--lr", "1e-9", "--min-lr", "0", "--warmup-steps", "0", "--quiet",
                 "--no-plots", "--threads", "1", "--no-augment"])
    assert code == 0
    saved = torch.load(tmp_path / "ft" / "train_checkpoint.pt", weights_only=True)["model"]
    # lr ~ 0: one step leaves the pre-trained stem where it was
    torch.testing.assert_close(saved["downsample_layers.0.0.weight"],
                               state["encoder.backbone.downsample_layers.0.0.weight"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("args, message", [
    (["mask_ratio=1.5"], "mask_ratio must be a number in the open interval (0, 1)"),
    (["--mask-ratio", "0"], "mask_ratio must be a number in the open interval (0, 1)"),
    (["--model", "sgconv_seq_tiny"], "not a 2-D image backbone"),
    (["model_kwargs.features_only=false"], "needs features_only=True"),
    (["--image-size", "36"], "not divisible by the backbone's final stride 8"),
    (["mixup=0.2"], "mixup does not apply to masked pre-training"),
])
def test_pretrain_cli_bad_input_is_one_line_exit_2(args, message, tmp_path, caplog):
    code = main(["pretrain", "--output", str(tmp_path / "bad"), "--quiet", "train_subset=64", *args])
    assert code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and message in errors[0], errors
