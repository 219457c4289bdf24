"""Small dependency-free helpers shared by several layers of the library."""

from largekernel.utils.atomic import atomic_write

__all__ = ["atomic_write"]
