"""Real photos that ship inside scikit-image and scikit-learn (no download needed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mlattack._validation import check_int

_EXTRA_HINT = "install the 'pretrained' extra: pip install 'mlattack[pretrained]'"


def _skimage_photos() -> dict[str, Callable[[], np.ndarray]]:
    try:
        from skimage import data
    except ImportError as error:
        raise ImportError(f"sample_photos needs scikit-image; {_EXTRA_HINT}") from error
    return {
        "astronaut": data.astronaut,
        "camera": data.camera,
        "chelsea": data.chelsea,
        "coffee": data.coffee,
        "motorcycle": lambda: data.stereo_motorcycle()[0],
        "rocket": data.rocket,
    }


def _sklearn_photos() -> dict[str, np.ndarray]:
    try:
        from sklearn.datasets import load_sample_images
    except ImportError as error:
        raise ImportError(f"sample_photos needs scikit-learn; {_EXTRA_HINT}") from error
    bunch = load_sample_images()
    return {
        Path(filename).stem: image
        for filename, image in zip(bunch.filenames, bunch.images, strict=True)
    }


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 [H,W] or [H,W,3] -> float [3,H,W] in [0,1] (grey images repeated over channels)."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(array[:, :, :3].transpose(2, 0, 1)))


def sample_photos(size: int | None = None) -> dict[str, torch.Tensor]:
    """The packaged real photos as float tensors ``[3, H, W]`` in ``[0, 1]``.

    scikit-image's ``astronaut``, ``camera`` (grey, repeated over three channels), ``chelsea``
    (a cat), ``coffee`` (a cup of espresso), ``motorcycle`` (left view of ``stereo_motorcycle``)
    and ``rocket``; scikit-learn's ``china`` and ``flower``.

    Args:
        size: when given, every photo is resized (bilinear, antialiased) to ``size x size`` so the
            photos can be stacked into one batch; by default each keeps its own size.

    Raises:
        ImportError: scikit-image or scikit-learn is missing (both are in the ``pretrained`` extra).
        ValueError: ``size`` is not a positive integer.
    """
    if size is not None:
        check_int(size, "size", minimum=1)
    photos = {name: _to_tensor(load()) for name, load in _skimage_photos().items()}
    photos.update({name: _to_tensor(image) for name, image in _sklearn_photos().items()})
    if size is None:
        return photos
    return {
        name: F.interpolate(
            photo[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )[0].clamp(0.0, 1.0)
        for name, photo in photos.items()
    }
