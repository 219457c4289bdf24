"""Small plotting and progress helpers shared by the analysis tools (headless matplotlib, tqdm)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

__all__ = ["pyplot", "progress_bar"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (PNG files, never a window).

    Example:
        >>> plt = pyplot()
        >>> fig, ax = plt.subplots(); plt.close(fig)
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def progress_bar(iterable: Iterable, *, total: int | None = None, desc: str = "", disable: bool = False) -> Iterable:
    """A tqdm progress bar on stderr (the bare iterable when ``disable``).

    Example:
        >>> list(progress_bar(range(3), disable=True))
        [0, 1, 2]
    """
    if disable:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, leave=False, file=sys.stderr,
                mininterval=0.5)
