"""UCR/UEA sets from aeon's wheel: published splits, z-normalisation, errors, and `largekernel train`."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest
import torch
from scipy import stats

from largekernel.cli import main as cli_main
from largekernel.data import build_dataset, dataset_info
from largekernel.data.ucr import list_ucr_datasets, load_ucr

K13 = str(resources.files("largekernel") / "configs" / "ucr_1d_k13.yaml")


def test_catalogue_lists_the_bundled_classification_sets_only():
    names = list_ucr_datasets()
    assert {"GunPoint", "ArrowHead", "ItalyPowerDemand", "OSULeaf", "BasicMotions", "JapaneseVowels"} <= set(names)
    assert "Covid3Month" not in names  # a regression set (@targetlabel), not classification


@pytest.mark.parametrize("name", ["GunPoint", "BasicMotions"])
def test_published_split_and_znormalisation_match_aeon(name):
    from aeon.datasets import load_classification

    for split in ("train", "test"):
        X, y = load_classification(name, split=split)  # aeon's own loader, bundled files
        ds = build_dataset(f"ucr:{name}", split)
        assert len(ds) == len(y) and ds[0][0].shape == X.shape[1:]
        ref = stats.zscore(X, axis=-1)  # per series, per channel over time
        got = torch.stack([ds[i][0] for i in range(len(ds))]).double().numpy()
        np.testing.assert_allclose(got, ref, atol=1e-5)
        names = ds.info.class_names
        assert [names[ds[i][1]] for i in range(len(ds))] == [str(v) for v in y]


def test_numeric_labels_sorted_numerically():
    _, y, classes = load_ucr("PickupGestureWiimoteZ_eq", "train")
    assert classes == [str(i) for i in range(1, 11)]
    assert set(y.tolist()) == set(range(10))


def test_unknown_name_lists_available():
    with pytest.raises(ValueError, match=r"unknown UCR/UEA data set 'NoSuchSet'.*GunPoint"):
        build_dataset("ucr:NoSuchSet", "train")


def test_unequal_length_without_padding_is_a_clear_error():
    with pytest.raises(ValueError, match=r"data='ucr:JapaneseVowels'.*unequal length.*ucr:JapaneseVowels:pad"):
        build_dataset("ucr:JapaneseVowels", "train")


def test_padding_and_resampling():
    padded = build_dataset("ucr:JapaneseVowels:pad", "train")
    resampled = build_dataset("ucr:japanesevowels:resample", "test")
    assert padded[0][0].shape == resampled[0][0].shape == (12, 29)
    x, _, _ = load_ucr("JapaneseVowels", "train", padding="pad")
    # the first series has 20 steps: normalised part, then exact zeros
    assert torch.all(x[0, :, 20:] == 0) and torch.allclose(x[0, :, :20].mean(-1), torch.zeros(12, dtype=x.dtype), atol=1e-9)
    assert dataset_info("ucr:GunPoint", image_size=64).image_size == 64


def test_bad_suffix_and_val_split():
    with pytest.raises(ValueError, match="suffix"):
        build_dataset("ucr:GunPoint:zeros", "train")
    with pytest.raises(ValueError, match="split='val'"):
        build_dataset("ucr:GunPoint", "val")


@pytest.mark.parametrize(
    "name", ["GunPoint", pytest.param("BasicMotions", marks=pytest.mark.slow),
             pytest.param("JapaneseVowels:pad", marks=pytest.mark.slow)]
)
def test_train_cli_one_epoch_with_shipped_config(tmp_path, name):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    code = cli_main(["train", "--config", K13, "--data", f"ucr:{name}", "epochs=1", "max_steps=2",
                     "--output", str(out), "--quiet", "eval_subset=40"])
    assert code == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["data"]["spec"] == f"ucr:{name}" and summary["steps"] == 2
    assert 0.0 <= summary["final"]["top1"] <= 1.0


def test_train_cli_unknown_name_exit_code(tmp_path):
    assert cli_main(["train", "--config", K13, "--data", "ucr:Nope", "--output", str(tmp_path / "r"), "--quiet"]) == 2


def test_train_cli_2d_model_on_series_names_spatial_dims(tmp_path, caplog):
    # the packaged default config is a 2-D model: a clear one-line error, not a conv traceback
    code = cli_main(["train", "--data", "ucr:ItalyPowerDemand", "max_steps=1", "batch_size=8",
                     "--output", str(tmp_path / "r"), "--quiet"])
    assert code == 2
    assert "spatial_dims=2" in caplog.text and "spatial_dims=1" in caplog.text


@pytest.mark.slow
def test_train_cli_every_bundled_name(tmp_path):
    torch.set_num_threads(1)
    for name in list_ucr_datasets():
        try:
            build_dataset(f"ucr:{name}", "test")
            spec = f"ucr:{name}"
        except ValueError:  # unequal lengths: the explicit padding choice
            spec = f"ucr:{name}:pad"
        out = tmp_path / name
        code = cli_main(["train", "--config", K13, "--data", spec, "epochs=1", "batch_size=8",
                         "--output", str(out), "--quiet"])
        assert code == 0, name
        assert (out / "metrics.json").is_file()
