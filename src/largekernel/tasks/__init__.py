"""Task heads and training recipes built on largekernel backbones (``segmentation``)."""
