"""Data sets that work offline, behind a registry.

Example:
    >>> from largekernel.data import build_dataset, list_datasets
    >>> ds = build_dataset("digits", "train", augment=True)
    >>> x, y = ds[0]; ds.info.num_classes
    10
"""

from largekernel.data.base import (
    DatasetInfo,
    ImageDataset,
    TensorImageDataset,
    evaluation_shard,
    stratified_split,
)
from largekernel.data.folder import FolderDataset
from largekernel.data.pathfinder import (
    PATHFINDER_DIFFICULTIES,
    PathfinderConfig,
    generate_pathfinder,
    generate_pathfinder_image,
    pathfinder_config,
)
from largekernel.data.registry import (
    EpochDataLoader,
    build_dataset,
    build_loaders,
    dataset_info,
    describe_datasets,
    list_datasets,
)

__all__ = [
    "DatasetInfo",
    "ImageDataset",
    "TensorImageDataset",
    "FolderDataset",
    "EpochDataLoader",
    "PathfinderConfig",
    "build_dataset",
    "build_loaders",
    "evaluation_shard",
    "dataset_info",
    "describe_datasets",
    "generate_pathfinder",
    "generate_pathfinder_image",
    "list_datasets",
    "pathfinder_config",
    "PATHFINDER_DIFFICULTIES",
    "stratified_split",
]
