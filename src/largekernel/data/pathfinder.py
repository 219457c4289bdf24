"""Procedural Pathfinder images (Long Range Arena style), generated deterministically.

Each image shows two endpoint dots and several dashed curves (smooth random walks made of short
dash segments). Label 1: the two dots sit on the two ends of the same curve. Label 0: each dot
sits on one end of a different curve. Both classes have the same number of curves and dots and
the same curve-length distribution; every curve grows from a random middle point in two
directions, so all ends are alike; the dotted curve is chosen by the same rule in both classes
and a negative's second dot is at (within a tolerance) the distance the positive's would be,
and the dots are never closer than about a quarter of the side. Local statistics therefore carry
(almost) no information: on 6000/2000 images at 32 px a gradient-boosted classifier on the
histogram of 3x3 binary patterns scores 51 % (chance 50 %), one on the dot distance 52 %.

Guarantees that make the label a function of the image (checked by the tests with a flood fill):

* pixels of different curves (dots included) are at Chebyshev distance >= ``SEPARATION + 1``
  = 4, so distinct curves never touch, even after a 3 x 3 dilation;
* consecutive dashes of one curve are at Chebyshev distance <= 3, so a 3 x 3 dilation joins a
  curve's dashes into one 8-connected component.

Image ``i`` of a split is drawn from ``numpy.random.default_rng((data_seed, split_id, i))``, so
it never depends on which other images are generated. Labels alternate (``i % 2``): every
split of even length is exactly balanced.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field

import numpy as np
import torch

from largekernel.data.base import DatasetInfo, TensorImageDataset, channel_stats, check_split
from largekernel.data.transforms import RandomDihedral, resize

__all__ = [
    "PathfinderConfig",
    "PathfinderSample",
    "PATHFINDER_SIZES",
    "PATHFINDER_DIFFICULTIES",
    "SEPARATION",
    "pathfinder_config",
    "generate_pathfinder_image",
    "generate_pathfinder",
    "pathfinder_arrays",
    "pathfinder_info",
    "build_pathfinder",
    "PATHFINDER_SPLIT_SIZES",
    "PATHFINDER_DATA_SEED",
]

log = logging.getLogger(__name__)

#: Image sides with a tuned generator configuration.
PATHFINDER_SIZES = (32, 64, 128)

#: Difficulty levels: ``hard`` (the default, tuned to defeat local statistics) and ``easy``
#: (same task and label guarantees, but only two curves made of few long dashes).
PATHFINDER_DIFFICULTIES = ("hard", "easy")

#: Cells within this Chebyshev distance of a curve are forbidden to every other curve.
SEPARATION = 3

#: The largest gap between dashes (pixels along the curve); with rounding the Chebyshev gap
#: between consecutive dash pixels stays <= 3 (see module docstring).
_MAX_GAP = 2.0

_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class PathfinderConfig:
    """Geometry of the generated images (lengths in pixels).

    Attributes:
        size: image side.
        num_curves: curves per image (both classes).
        num_dashes: dashes per curve (a curve is ``dash, gap, dash, ..., dash``).
        dash_length: length of one dash.
        gap_length: length of the gap between dashes (<= 2 keeps the dashes of a curve joinable).
        turn_std: standard deviation of the heading change from one dash/gap to the next (rad).
        dot_radius: radius of the endpoint dots.
        min_dash_fraction: a curve blocked by others may stop early, but keeps at least this
            fraction of its dashes (otherwise it is re-drawn).
        min_dot_distance: images whose dots are closer than this fraction of the side are
            re-drawn (both classes).
        distance_tolerance: a negative is re-drawn unless its dot distance is within this many
            pixels of the end-to-end distance of the curve a positive would have dotted.
    """

    size: int
    num_curves: int
    num_dashes: int
    dash_length: float
    gap_length: float = 2.0
    turn_std: float = 0.3
    dot_radius: float = 1.5
    min_dash_fraction: float = 0.8
    min_dot_distance: float = 0.25
    distance_tolerance: float = 2.0

    def __post_init__(self) -> None:
        if self.size < 16:
            raise ValueError(f"size must be >= 16, got {self.size}")
        if self.num_curves < 2:
            raise ValueError(f"num_curves must be >= 2 (negatives need two curves), got {self.num_curves}")
        if self.num_dashes < 2:
            raise ValueError(f"num_dashes must be >= 2, got {self.num_dashes}")
        if not 0 < self.gap_length <= _MAX_GAP:
            raise ValueError(f"gap_length must be in (0, {_MAX_GAP}], got {self.gap_length}")
        if self.dash_length <= 0 or self.dot_radius < 0 or self.turn_std < 0:
            raise ValueError("dash_length must be > 0, dot_radius and turn_std >= 0")
        if not 0 <= self.min_dot_distance < 1 or self.distance_tolerance <= 0:
            raise ValueError("min_dot_distance must be in [0, 1) and distance_tolerance > 0")
        if not 0 < self.min_dash_fraction <= 1:
            raise ValueError(f"min_dash_fraction must be in (0, 1], got {self.min_dash_fraction}")

    @property
    def curve_length(self) -> float:
        """Nominal curve length in pixels."""
        return self.num_dashes * self.dash_length + (self.num_dashes - 1) * self.gap_length


_CONFIGS = {
    # curves ~0.9 of the side at 32 px, ~0.75 at 64 and 128
    32: PathfinderConfig(size=32, num_curves=3, num_dashes=6, dash_length=3.0, dot_radius=1.5),
    64: PathfinderConfig(size=64, num_curves=4, num_dashes=8, dash_length=4.0, dot_radius=2.0),
    128: PathfinderConfig(size=128, num_curves=6, num_dashes=13, dash_length=5.5, dot_radius=2.5),
}

# The easy level keeps the task (are the dots on one curve?) and every guarantee of the hard
# one, but with the minimum of two curves (one distractor) and fewer, longer dashes joined by
# short gaps, so each curve is an almost solid, smoother stroke that a small CPU budget can learn.
_EASY_CONFIGS = {
    32: PathfinderConfig(size=32, num_curves=2, num_dashes=3, dash_length=6.0, gap_length=1.0,
                         turn_std=0.2, dot_radius=1.5),
    64: PathfinderConfig(size=64, num_curves=2, num_dashes=4, dash_length=9.0, gap_length=1.0,
                         turn_std=0.2, dot_radius=2.0),
    128: PathfinderConfig(size=128, num_curves=3, num_dashes=6, dash_length=14.0, gap_length=1.0,
                          turn_std=0.2, dot_radius=2.5),
}


def _check_difficulty(difficulty: str) -> str:
    if difficulty not in PATHFINDER_DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {PATHFINDER_DIFFICULTIES}, got {difficulty!r}")
    return difficulty


def pathfinder_config(size: int, difficulty: str = "hard") -> PathfinderConfig:
    """The tuned :class:`PathfinderConfig` for ``size`` (one of 32, 64, 128) and ``difficulty``."""
    table = _CONFIGS if _check_difficulty(difficulty) == "hard" else _EASY_CONFIGS
    if size not in table:
        raise ValueError(f"pathfinder size must be one of {PATHFINDER_SIZES}, got {size!r}")
    return table[size]


@dataclass
class PathfinderSample:
    """One generated image with the facts needed to check it.

    Attributes:
        image: ``size x size`` uint8 image (0 background, 255 ink).
        label: 1 if the dots are connected by one curve, else 0.
        dots: the two dot centres as ``(row, col)``.
        curves: per curve, a boolean mask of its drawn pixels (dashes and dots).
    """

    image: np.ndarray
    label: int
    dots: tuple[tuple[int, int], tuple[int, int]]
    curves: list[np.ndarray] = field(default_factory=list)


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by a (2r+1) x (2r+1) square (separable, numpy only)."""
    h, w = mask.shape
    p = np.pad(mask, r)
    rows = np.zeros((h + 2 * r, w), dtype=bool)
    for i in range(2 * r + 1):
        rows |= p[:, i : i + w]
    out = np.zeros((h, w), dtype=bool)
    for i in range(2 * r + 1):
        out |= rows[i : i + h]
    return out


def _disk_offsets(radius: float) -> list[tuple[int, int]]:
    r = int(math.floor(radius))
    return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if dy * dy + dx * dx <= radius * radius]


def _segment_cells(y0: float, x0: float, y1: float, x1: float) -> list[tuple[int, int]]:
    """Pixels of a segment (DDA: one sample per pixel along the major axis, 8-connected).

    Coordinates must be non-negative (callers check the end points first), which lets
    ``int(v + 0.5)`` round quickly.
    """
    dy, dx = y1 - y0, x1 - x0
    n = max(1, int(math.ceil(max(abs(dy), abs(dx)))))
    sy, sx = dy / n, dx / n
    cells = []
    last = None
    for k in range(n + 1):
        c = (int(y0 + k * sy + 0.5), int(x0 + k * sx + 0.5))
        if c != last:
            cells.append(c)
            last = c
    return cells


class _Canvas:
    """Per-image growth state: which cells are forbidden to the next curve."""

    def __init__(self, cfg: PathfinderConfig) -> None:
        self.cfg = cfg
        self.size = cfg.size
        self.margin = int(math.ceil(cfg.dot_radius))
        self.forbidden = np.zeros((cfg.size, cfg.size), dtype=bool)
        self.dot = _disk_offsets(cfg.dot_radius)

    def free(self, cells: list[tuple[int, int]], margin: int) -> bool:
        lo, hi = margin, self.size - 1 - margin
        forb = self.forbidden
        for y, x in cells:
            if y < lo or y > hi or x < lo or x > hi or forb[y, x]:
                return False
        return True

    def dot_cells(self, y: int, x: int) -> list[tuple[int, int]]:
        return [(y + dy, x + dx) for dy, dx in self.dot]

    def _walk(
        self, rng: np.random.Generator, y: float, x: float, angle: float, num_dashes: int
    ) -> tuple[list[list[tuple[int, int]]], list[tuple[int, int]]]:
        """Walk ``dash, gap, dash, ...`` from ``(y, x)``; stops early when blocked.

        Returns the dashes (each a list of cells, starting at the walk's origin) and the
        cells of the gaps between them (reserved, not drawn). The walk ends on a dash.
        """
        cfg = self.cfg
        # continuous bounds whose rounding stays inside the 1-pixel margin
        lo, hi = 0.5, self.size - 1.5 - 1e-9
        n_pieces = 2 * num_dashes - 1
        # draw the walk's randomness at once (scalar numpy calls dominate otherwise)
        turns = (rng.normal(0.0, cfg.turn_std, n_pieces) if cfg.turn_std > 0 else np.zeros(n_pieces)).tolist()
        signs = np.where(rng.random(n_pieces) < 0.5, 1.0, -1.0).tolist()
        dashes: list[list[tuple[int, int]]] = []
        gaps: list[tuple[int, int]] = []
        pending_gap: list[tuple[int, int]] = []
        for piece in range(n_pieces):
            is_dash = piece % 2 == 0
            length = cfg.dash_length if is_dash else cfg.gap_length
            base = angle + turns[piece]
            sign = signs[piece]
            placed = False
            # when blocked, try progressively sharper turns (alternating sides, random first)
            for turn in (0.0, 0.35, -0.35, 0.7, -0.7, 1.05, -1.05):
                a = base + sign * turn
                y1, x1 = y + length * math.sin(a), x + length * math.cos(a)
                # the canvas is convex: in-bounds end points mean an in-bounds segment
                if not (lo <= y1 <= hi and lo <= x1 <= hi):
                    continue
                cells = _segment_cells(y, x, y1, x1)
                if self.free(cells, 1):
                    placed = True
                    break
            if not placed:
                break
            if is_dash:
                dashes.append(cells)
                gaps.extend(pending_gap)
                pending_gap = []
            else:
                pending_gap = cells
            y, x, angle = y1, x1, a
        # the walk must end where an end dot fits (else it is shortened)
        while len(dashes) >= 2 and not self.free(self.dot_cells(*dashes[-1][-1]), 0):
            dashes.pop()
        return dashes, gaps

    def grow(self, rng: np.random.Generator) -> tuple[list[list[tuple[int, int]]], list[tuple[int, int]]] | None:
        """One curve as (list of dash cell lists, gap cells); None if it could not be placed.

        A curve grows from a random middle point in two opposite directions, so both of its
        ends are made the same way (an end is often where growth was blocked); dots then see
        the same surroundings whichever end they are put on.
        """
        cfg = self.cfg
        m = self.margin
        half = cfg.num_dashes // 2 + 1
        need = max(2, math.ceil(cfg.min_dash_fraction * cfg.num_dashes))
        for _ in range(20):
            y, x = (float(v) for v in rng.uniform(m, self.size - 1 - m, size=2))
            if not self.free([(int(y + 0.5), int(x + 0.5))], 1):
                continue
            angle = float(rng.uniform(0.0, 2.0 * math.pi))
            d1, g1 = self._walk(rng, y, x, angle, half)
            d2, g2 = self._walk(rng, y, x, angle + math.pi, half)
            if not d1 or not d2:
                continue
            # the two first dashes meet at the middle point: join them into one dash
            middle = [c[::-1] for c in d1[:0:-1]] if len(d1) > 1 else []
            joined = d1[0][::-1] + d2[0][1:]
            dashes = middle + [joined] + d2[1:]
            if len(dashes) < need:
                continue
            if not (self.free(self.dot_cells(*dashes[0][0]), 0) and self.free(self.dot_cells(*dashes[-1][-1]), 0)):
                continue
            return dashes, g1 + g2
        return None

    def reserve(self, solid: np.ndarray) -> None:
        self.forbidden |= _dilate(solid, SEPARATION)


def generate_pathfinder_image(
    cfg: PathfinderConfig, label: int, rng: np.random.Generator, keep_curves: bool = False
) -> PathfinderSample:
    """Draw one Pathfinder image.

    Args:
        cfg: geometry (see :func:`pathfinder_config`).
        label: 1 for connected dots, 0 for dots on different curves.
        rng: numpy generator (consumed).
        keep_curves: also return each curve's pixel mask (for checking).

    Returns:
        A :class:`PathfinderSample`.
    """
    if label not in (0, 1):
        raise ValueError(f"label must be 0 or 1, got {label!r}")
    size = cfg.size
    for _attempt in range(1000):
        canvas = _Canvas(cfg)
        curves = []
        for _ in range(cfg.num_curves):
            curve = canvas.grow(rng)
            if curve is None:
                break
            dashes, gaps = curve
            start, end = dashes[0][0], dashes[-1][-1]
            solid = np.zeros((size, size), dtype=bool)
            drawn = np.zeros((size, size), dtype=bool)
            for cells in dashes:
                ys, xs = zip(*cells)
                drawn[ys, xs] = True
            solid |= drawn
            if gaps:
                gy, gx = zip(*gaps)
                solid[gy, gx] = True
            # reserve both end dots for every curve: any end may receive a dot, and reserving
            # them for all curves keeps the classes statistically identical
            for y, x in (start, end):
                ys, xs = zip(*canvas.dot_cells(y, x))
                solid[ys, xs] = True
            canvas.reserve(solid)
            curves.append((drawn, start, end))
        if len(curves) < cfg.num_curves:
            continue
        # Both classes put one dot on the first end of a curve k and the other on the second
        # end of k (label 1) or of the curve j whose second end is at the same distance from
        # k's first end (label 0). k is drawn uniformly among the curves for which such a j
        # exists (within tolerance) and whose ends are not too close (no small window may see
        # both dots), by the same rule in both classes, so the classes share one distribution
        # of dot distance and of the dots' surroundings.
        usable = []
        for k in range(len(curves)):
            start_k, final_k = curves[k][1], curves[k][2]
            target = math.dist(start_k, final_k)
            if target < cfg.min_dot_distance * size:
                continue
            err, j = min((abs(math.dist(start_k, curves[j][2]) - target), j) for j in range(len(curves)) if j != k)
            if err <= cfg.distance_tolerance:
                usable.append((k, j))
        if not usable:
            continue
        k, j = usable[int(rng.integers(len(usable)))]
        dots = (curves[k][1], curves[k][2] if label == 1 else curves[j][2])
        break
    else:  # pragma: no cover - the configurations above never get here
        raise RuntimeError(f"could not place {cfg.num_curves} curves on a {size}px image")

    image = np.zeros((size, size), dtype=np.uint8)
    masks = []
    for drawn, _, _ in curves:
        image[drawn] = 255
    dot_cells = [c for d in dots for c in canvas.dot_cells(*d)]
    ys, xs = zip(*dot_cells)
    image[ys, xs] = 255
    if keep_curves:
        for drawn, start, end in curves:
            mask = drawn.copy()
            for d in dots:
                if d in (start, end):
                    dy, dx = zip(*canvas.dot_cells(*d))
                    mask[dy, dx] = True
            masks.append(mask)
    return PathfinderSample(image=image, label=int(label), dots=(tuple(dots[0]), tuple(dots[1])), curves=masks)


def generate_pathfinder(
    size: int,
    num_images: int,
    split: str = "train",
    data_seed: int = 0,
    start: int = 0,
    config: PathfinderConfig | None = None,
    difficulty: str = "hard",
) -> tuple[np.ndarray, np.ndarray]:
    """Generate images ``start .. start + num_images - 1`` of a split.

    Args:
        size: image side (32, 64 or 128 unless ``config`` is given).
        num_images: how many images.
        split: ``train``, ``val`` or ``test`` (independent streams).
        data_seed: seed of the whole data set.
        start: index of the first image (image ``i`` is the same whatever ``start``).
        config: override the geometry.
        difficulty: ``hard`` or ``easy`` (ignored when ``config`` is given).

    Returns:
        ``(images, labels)``: ``uint8 [N, size, size]`` and ``int64 [N]`` (label ``i % 2``).

    Example:
        >>> images, labels = generate_pathfinder(32, 4)
        >>> images.shape, labels.tolist()
        ((4, 32, 32), [0, 1, 0, 1])
    """
    if split not in _SPLIT_IDS:
        raise ValueError(f"split must be one of {tuple(_SPLIT_IDS)}, got {split!r}")
    if num_images < 0 or start < 0:
        raise ValueError(f"num_images and start must be >= 0, got {num_images}, {start}")
    cfg = config if config is not None else pathfinder_config(size, difficulty)
    if cfg.size != size:
        raise ValueError(f"config.size {cfg.size} differs from size {size}")
    images = np.zeros((num_images, size, size), dtype=np.uint8)
    labels = np.zeros(num_images, dtype=np.int64)
    for k in range(num_images):
        i = start + k
        rng = np.random.default_rng((int(data_seed), _SPLIT_IDS[split], i))
        sample = generate_pathfinder_image(cfg, i % 2, rng)
        images[k] = sample.image
        labels[k] = sample.label
    return images, labels


_CACHE: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
_CACHE_LOCK = threading.Lock()


def pathfinder_arrays(
    size: int, split: str, num_images: int, data_seed: int = 0, difficulty: str = "hard"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate (once per process, then cached in memory) a split as tensors.

    Returns:
        ``(images uint8 [N, 1, size, size], labels int64 [N])``.
    """
    key = (size, split, num_images, data_seed, _check_difficulty(difficulty))
    with _CACHE_LOCK:
        if key not in _CACHE:
            log.info("generating pathfinder%d (%s) %s split (%d images)", size, difficulty, split, num_images)
            images, labels = generate_pathfinder(size, num_images, split, data_seed, difficulty=difficulty)
            _CACHE[key] = (torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels))
        return _CACHE[key]


#: Images per split for each native size (train, val, test); all even, so exactly balanced.
PATHFINDER_SPLIT_SIZES = {
    32: {"train": 8000, "val": 1000, "test": 2000},
    64: {"train": 8000, "val": 1000, "test": 2000},
    128: {"train": 5000, "val": 1000, "test": 2000},
}

#: Train images used for the normalisation statistics (a prefix, so ``dataset_info`` is cheap).
_STATS_IMAGES = 256

#: The data set's content seed: fixed, so every run sees (and is tested on) the same images.
PATHFINDER_DATA_SEED = 0

_STATS: dict[tuple[int, int, str], tuple[tuple[float, ...], tuple[float, ...]]] = {}


def _native_size(requested: int | None, native: int | None) -> int:
    if native is not None:
        return native
    if requested is None:
        return 32
    # generate at the smallest tuned size that is at least the requested one
    for s in PATHFINDER_SIZES:
        if requested <= s:
            return s
    return PATHFINDER_SIZES[-1]


def pathfinder_info(
    image_size: int | None = None, native_size: int | None = None, difficulty: str = "hard"
) -> DatasetInfo:
    """:class:`DatasetInfo` of Pathfinder.

    Args:
        image_size: side of the returned images (default: the native size).
        native_size: generation size (32, 64 or 128); default: the smallest tuned size
            ``>= image_size`` (32 if neither is given).
        difficulty: ``hard`` (default) or ``easy``.
    """
    native = _native_size(image_size, native_size)
    pathfinder_config(native, difficulty)  # validates
    size = image_size or native
    key = (native, size, difficulty)
    if key not in _STATS:
        n = min(_STATS_IMAGES, PATHFINDER_SPLIT_SIZES[native]["train"])
        cached = _CACHE.get(
            (native, "train", PATHFINDER_SPLIT_SIZES[native]["train"], PATHFINDER_DATA_SEED, difficulty)
        )
        if cached is not None:
            imgs = cached[0][:n]
        else:
            imgs = generate_pathfinder(native, n, "train", PATHFINDER_DATA_SEED, difficulty=difficulty)[0]
            imgs = torch.from_numpy(imgs).unsqueeze(1)
        x = imgs.float() / 255.0
        if size != native:
            x = resize(x, size, "bilinear")
        _STATS[key] = channel_stats(x)
    mean, std = _STATS[key]
    return DatasetInfo(
        name=f"pathfinder{native}" if difficulty == "hard" else f"pathfinder{native}-{difficulty}",
        num_classes=2,
        in_chans=1,
        image_size=size,
        class_names=("disconnected", "connected"),
        mean=mean,
        std=std,
    )


def build_pathfinder(
    split: str,
    image_size: int | None = None,
    augment: bool = False,
    seed: int = 0,
    native_size: int | None = None,
    num_images: int | None = None,
    difficulty: str = "hard",
) -> TensorImageDataset:
    """A Pathfinder split, generated once per process and cached in memory.

    Splits are independent streams of the same generator (train 8000 / val 1000 / test 2000
    images at 32 and 64 px; 5000 / 1000 / 2000 at 128 px). Augmentation: a random symmetry of the
    square (rotations by 90 degrees, flips), which is exact and preserves the label.

    Args:
        split: ``train``, ``val`` or ``test``.
        image_size: side of the returned images (default: the native size). A size other than
            the native one is reached by bilinear resizing (thin strokes get blurred).
        augment: apply the augmentation.
        seed: augmentation seed (the images themselves are fixed).
        native_size: generation size (32, 64 or 128).
        num_images: override the split's size (must be even to stay balanced).
        difficulty: ``hard`` (default) or ``easy`` (two curves of few long dashes).

    Example:
        >>> ds = build_pathfinder("val", num_images=8)
        >>> ds[1][0].shape, ds[1][1]
        (torch.Size([1, 32, 32]), 1)
    """
    check_split(split)
    native = _native_size(image_size, native_size)
    pathfinder_config(native, difficulty)  # validates native_size and difficulty
    n = PATHFINDER_SPLIT_SIZES[native][split] if num_images is None else int(num_images)
    if n <= 0:
        raise ValueError(f"num_images must be positive, got {n}")
    images, labels = pathfinder_arrays(native, split, n, PATHFINDER_DATA_SEED, difficulty)
    # after generating: the statistics reuse a cached train split when there is one
    info = pathfinder_info(image_size, native_size, difficulty)
    if info.image_size != native:
        log.warning(
            "pathfinder%d resized to %d px: strokes are blurred; prefer a native size %s",
            native, info.image_size, PATHFINDER_SIZES,
        )
        images = resize(images.float() / 255.0, info.image_size, "bilinear")
    aug = RandomDihedral() if augment else None
    return TensorImageDataset(images, labels, info, split, aug, seed)
