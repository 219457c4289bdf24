"""Labelled point clouds sampled from trimesh primitives, with noise, rotation and partial views.

Six classes of shapes built with :mod:`trimesh.creation` -- box, sphere, cylinder, cone, capsule
and torus -- each with random proportions. A sample: ``2048 // 4`` points drawn on the surface
(``trimesh.sample.sample_surface``), a random 3-D rotation, Gaussian jitter (1 % of the radius),
centred and scaled into the unit ball, and in half of the samples a partial view (the points
beyond a random plane through the shape are removed, as a single depth sensor would see it).

Two views of each cloud, through :mod:`largekernel.nn.adapters`:

* ``shapes-views`` -- three orthographic depth images ``(3, S, S)`` for a 2-D backbone (default
  S = 32), the authors' multi-view projection;
* ``shapes-voxels`` -- a binary occupancy grid ``(1, G, G, G)`` for a 3-D backbone (default G = 16).

Generation is deterministic (a fixed seed per sample); the splits are independent draws
(train 600, val 120, test 300 clouds, classes balanced).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from largekernel.data.arrays import ArrayDataset, array_info
from largekernel.data.base import DatasetInfo, check_split, sample_seed
from largekernel.nn.adapters import depth_views, normalise_points, voxelize

__all__ = ["SHAPE_CLASSES", "POINTCLOUD_VARIANTS", "make_shape_cloud", "build_pointcloud", "pointcloud_info"]

SHAPE_CLASSES = ("box", "sphere", "cylinder", "cone", "capsule", "torus")
#: spec -> (representation, default size)
POINTCLOUD_VARIANTS = {"shapes-views": ("views", 32), "shapes-voxels": ("voxels", 16)}
_SPLIT_SIZES = {"train": 600, "val": 120, "test": 300}
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
_NUM_POINTS = 512


def _mesh(label: int, rng: np.random.Generator):
    import trimesh

    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731 - a short local sampler
    kind = SHAPE_CLASSES[label]
    if kind == "box":
        return trimesh.creation.box(extents=[u(0.5, 1.5), u(0.5, 1.5), u(0.5, 1.5)])
    if kind == "sphere":
        return trimesh.creation.icosphere(subdivisions=2, radius=u(0.5, 1.0))
    if kind == "cylinder":
        return trimesh.creation.cylinder(radius=u(0.3, 0.6), height=u(0.8, 2.0), sections=24)
    if kind == "cone":
        return trimesh.creation.cone(radius=u(0.4, 0.8), height=u(0.8, 2.0), sections=24)
    if kind == "capsule":
        return trimesh.creation.capsule(height=u(0.6, 1.5), radius=u(0.25, 0.5), count=[12, 12])
    return trimesh.creation.torus(major_radius=u(0.6, 1.0), minor_radius=u(0.15, 0.35), major_sections=24, minor_sections=12)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))  # a uniformly random orthogonal matrix ...
    if np.linalg.det(q) < 0:  # ... made a proper rotation
        q[:, 0] = -q[:, 0]
    return q


def make_shape_cloud(label: int, seed: int, num_points: int = _NUM_POINTS, partial: bool | None = None) -> torch.Tensor:
    """One noisy, randomly rotated (possibly partial) cloud ``(P, 3)`` of class ``label``, in the unit ball.

    Example:
        >>> make_shape_cloud(0, seed=1).shape[1]
        3
    """
    import trimesh

    if not 0 <= label < len(SHAPE_CLASSES):
        raise ValueError(f"label must be in [0, {len(SHAPE_CLASSES)}), got {label!r}")
    rng = np.random.default_rng(seed)
    mesh = _mesh(label, rng)
    points, _ = trimesh.sample.sample_surface(mesh, num_points, seed=rng)
    points = np.asarray(points) @ _random_rotation(rng).T
    points = points + rng.normal(scale=0.01 * np.linalg.norm(points, axis=1).max(), size=points.shape)
    if partial if partial is not None else rng.random() < 0.5:
        normal = rng.normal(size=3)
        normal /= np.linalg.norm(normal)
        depth = (points - points.mean(0)) @ normal
        keep = depth <= np.quantile(depth, rng.uniform(0.6, 0.85))
        points = points[keep]
    return normalise_points(points)


@functools.lru_cache(maxsize=8)
def _generate(variant: str, split: str, size: int) -> tuple[torch.Tensor, np.ndarray]:
    kind = POINTCLOUD_VARIANTS[variant][0]
    n = _SPLIT_SIZES[split]
    labels = np.arange(n) % len(SHAPE_CLASSES)
    samples = []
    for i, label in enumerate(labels):
        cloud = make_shape_cloud(int(label), sample_seed(20261130, _SPLIT_IDS[split], i))
        samples.append(depth_views(cloud, size) if kind == "views" else voxelize(cloud, size))
    x = torch.stack(samples)
    if kind == "views":  # nearness values are in [0, 1]; centre them like an image
        x = (x - 0.5) / 0.5
    return x, labels


def pointcloud_info(variant: str, size: int | None = None) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``shapes-views`` / ``shapes-voxels``."""
    return build_pointcloud(variant, "val", size).info


def build_pointcloud(variant: str, split: str, size: int | None = None) -> ArrayDataset:
    """One split of ``shapes-views`` (``(3, S, S)``) or ``shapes-voxels`` (``(1, G, G, G)``).

    Args:
        variant: ``"shapes-views"`` or ``"shapes-voxels"``.
        split: ``train``, ``val`` or ``test``.
        size: image side S or grid side G (default 32 / 16).

    Example:
        >>> build_pointcloud("shapes-voxels", "val", 8)[0][0].shape
        torch.Size([1, 8, 8, 8])
    """
    if variant not in POINTCLOUD_VARIANTS:
        raise ValueError(f"variant must be one of {sorted(POINTCLOUD_VARIANTS)}, got {variant!r}")
    split = check_split(split)
    size = size or POINTCLOUD_VARIANTS[variant][1]
    x, labels = _generate(variant, split, int(size))
    return ArrayDataset(x, labels, array_info(variant, x, SHAPE_CLASSES), split)
