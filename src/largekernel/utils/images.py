"""Opening user image files safely: one clear error naming the file, never a crash.

Pillow guards against decompression bombs (a few-kilobyte PNG that claims to be 100 000 x
100 000 pixels) with ``Image.MAX_IMAGE_PIXELS``: above it a ``DecompressionBombWarning``, above
twice it a ``DecompressionBombError``. Here both are errors (a warning would let the bomb be
decoded), the limit is Pillow's default unless ``LARGEKERNEL_MAX_IMAGE_PIXELS`` says otherwise,
and every failure (bomb, corrupt or truncated data, unknown format, unreadable file) becomes
:class:`largekernel.errors.ImageError` with the path in its message.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Iterator

from largekernel.errors import ImageError

__all__ = ["max_image_pixels", "open_image", "check_image"]

_DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own default (about 0.25 GB of 24-bit pixels)


def max_image_pixels() -> int:
    """The largest number of pixels an image may have (``LARGEKERNEL_MAX_IMAGE_PIXELS`` or Pillow's default).

    Example:
        >>> max_image_pixels() > 0
        True
    """
    text = os.environ.get("LARGEKERNEL_MAX_IMAGE_PIXELS")
    if text is None:
        return _DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        raise ImageError(f"LARGEKERNEL_MAX_IMAGE_PIXELS must be a positive integer, got {text!r}") from None
    if value < 1:
        raise ImageError(f"LARGEKERNEL_MAX_IMAGE_PIXELS must be a positive integer, got {text!r}")
    return value


@contextlib.contextmanager
def open_image(path: str | os.PathLike, *, load: bool = True) -> Iterator["PIL.Image.Image"]:  # noqa: F821
    """``PIL.Image.open(path)`` with decompression-bomb and corruption checks.

    Args:
        path: The image file.
        load: Decode the pixels now (so truncated data fails here, not later).

    Yields:
        The opened (and, with ``load``, decoded) image.

    Raises:
        FileNotFoundError: No such file.
        ImageError: Not an image, corrupt or truncated data, or more than :func:`max_image_pixels`.

    Example:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> p = os.path.join(tempfile.mkdtemp(), "a.png")
        >>> Image.new("L", (4, 3)).save(p)
        >>> with open_image(p) as img:
        ...     img.size
        (4, 3)
    """
    from PIL import Image, ImageFile, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    limit = max_image_pixels()
    previous_limit, previous_truncated = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS = limit
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not grey padding
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                img = Image.open(path)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
                raise ImageError(f"refused image {path}: {err} (a possible decompression bomb; raise the "
                                 f"limit with LARGEKERNEL_MAX_IMAGE_PIXELS if the file is genuine)",
                                 path=path) from None
            except Exception as err:  # Pillow's decoders raise many types on hostile input
                if isinstance(err, UnidentifiedImageError):
                    raise ImageError(f"cannot read image {path}: not a recognised image format",
                                     path=path) from None
                raise ImageError(f"cannot read image {path}: {type(err).__name__}: {err}", path=path) from None
            with img:
                w, h = img.size
                if w < 1 or h < 1:
                    raise ImageError(f"cannot read image {path}: it has no pixels ({w}x{h})", path=path)
                if load:
                    try:
                        img.load()
                    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
                        raise ImageError(f"refused image {path}: {err} (a possible decompression bomb)",
                                         path=path) from None
                    except Exception as err:
                        raise ImageError(f"cannot read image {path}: corrupt or truncated data ({err})",
                                         path=path) from None
                yield img
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit
        ImageFile.LOAD_TRUNCATED_IMAGES = previous_truncated


def check_image(path: str | os.PathLike) -> str:
    """Fully decode ``path`` once; return its Pillow mode (raises :class:`ImageError` if unusable).

    Example:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> p = os.path.join(tempfile.mkdtemp(), "a.png")
        >>> Image.new("RGB", (2, 2)).save(p)
        >>> check_image(p)
        'RGB'
    """
    with open_image(path) as img:
        return img.mode
