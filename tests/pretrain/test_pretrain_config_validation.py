"""``largekernel.pretrain.config``: loading, overrides and the checks of the pre-training options."""

from __future__ import annotations

import pytest
import yaml

from largekernel.pretrain.config import (
    PRETRAIN_KEYS,
    PretrainConfig,
    apply_pretrain_overrides,
    default_pretrain_config_path,
    load_pretrain_config,
    pretrain_config_from_dict,
)


@pytest.mark.parametrize("key, value, match", [
    ("mask_ratio", 0.0, "mask_ratio must be a number in the open interval"),
    ("mask_ratio", 1.0, "mask_ratio must be a number in the open interval"),
    ("mask_ratio", True, "mask_ratio must be a number in the open interval"),
    ("decoder_width", 0, "decoder_width must be a positive int or null"),
    ("decoder_width", "wide", "decoder_width"),
    ("norm_pix_loss", "perhaps", "norm_pix_loss"),
    ("recon_images", -1, "recon_images must be a non-negative int"),
    ("mixup", 0.2, "mixup does not apply to masked pre-training"),
    ("cutmix", 1.0, "cutmix does not apply to masked pre-training"),
    ("label_smoothing", 0.1, "label_smoothing does not apply to masked pre-training"),
    ("ema", True, "ema is not supported by masked pre-training"),
])
def test_validate_names_the_bad_option(key, value, match):
    with pytest.raises(ValueError, match=match):
        PretrainConfig(**{key: value}).validate()


# like TrainConfig's integer options ("epochs must be a number, not true/false"), the pre-training
# counts refuse true/false; the shared pydantic check would otherwise turn true into 1


@pytest.mark.parametrize("key", ["decoder_width", "recon_images"])
def test_true_is_not_a_count(key):
    with pytest.raises(ValueError, match=key):
        PretrainConfig(**{key: True}).validate()


def test_numeric_and_boolean_strings_are_normalised_like_train_options():
    cfg = PretrainConfig(decoder_width="64", norm_pix_loss="no", recon_images="3").validate()
    assert (cfg.decoder_width, cfg.norm_pix_loss, cfg.recon_images) == (64, False, 3)


def test_neutral_values_and_zero_recon_images_are_valid():
    cfg = PretrainConfig(recon_images=0, decoder_width=None, mixup=0.0, cutmix=0.0).validate()
    assert cfg.recon_images == 0 and cfg.decoder_width is None


def test_packaged_default_is_what_its_yaml_says():
    raw = yaml.safe_load(default_pretrain_config_path().read_text())
    cfg = load_pretrain_config().validate()
    for key, value in raw.items():
        assert getattr(cfg, key) == value, key
    assert set(PRETRAIN_KEYS) <= set(raw)  # the packaged file documents every pre-training option


def test_overrides_coerce_strings_and_reach_model_kwargs():
    cfg = apply_pretrain_overrides(PretrainConfig(), ["mask_ratio=0.5", "decoder_width=32", "epochs=3",
                                                      "model_kwargs.dims=[8,16,32,64]", "norm_pix_loss=false"])
    assert (cfg.mask_ratio, cfg.decoder_width, cfg.epochs, cfg.norm_pix_loss) == (0.5, 32, 3, False)
    assert cfg.model_kwargs["dims"] == [8, 16, 32, 64]
    assert isinstance(cfg, PretrainConfig)
    # from a mapping (e.g. YAML written by hand): whole floats become ints, numeric strings floats
    cfg = pretrain_config_from_dict({"decoder-width": 64.0, "recon_images": 4.0, "mask_ratio": "0.25"})
    assert (cfg.decoder_width, cfg.recon_images, cfg.mask_ratio) == (64, 4, 0.25)
    assert type(cfg.decoder_width) is int and type(cfg.recon_images) is int


def test_bad_sources_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="mask_ratio must be a number, got 'lots'"):
        apply_pretrain_overrides(PretrainConfig(), ["mask_ratio=lots"])
    with pytest.raises(ValueError, match="a config must be a mapping of option: value, got list"):
        pretrain_config_from_dict([("epochs", 2)])
    with pytest.raises(ValueError, match="epochz"):
        pretrain_config_from_dict({"epochz": 2})
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_pretrain_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("epochs: [1, 2\n")
    with pytest.raises(ValueError, match="is not valid YAML"):
        load_pretrain_config(broken)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("mask_ratio: often\n")
    with pytest.raises(ValueError, match=f"{wrong}: mask_ratio must be a number"):
        load_pretrain_config(wrong)
