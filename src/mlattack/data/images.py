"""Datasets of image files with label vectors, and how unreadable images are skipped.

Policy for unreadable images (missing, truncated, corrupt, not an image): an image is never silently
replaced by another. By default they are found *lazily*: ``__getitem__(i)`` raises
:class:`UnreadableImageError` naming the file, and remembers ``i`` (``skipped``, ``num_skipped``);
the experiment runner catches it, skips the image explicitly and reports it. With ``validate=True``
every image is decoded once at construction and the unreadable ones are dropped up front (``len``
shrinks, ``num_skipped`` is final): use it for training, where a raise would end the epoch.

Paths that list files name them relative to the dataset's root; :func:`path_inside` refuses absolute
paths and ``..`` that would leave it, and every file is read through :mod:`mlattack._files`: a FIFO
or other non-regular file is never opened for reading (an image that is one counts as unreadable),
and a symlink whose real path leaves the dataset's root (or images folder) is refused with a
``ValueError`` naming it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from mlattack._files import OutsideRootError, open_regular
from mlattack._validation import check_int
from mlattack.data.labels import LabelSpace

if TYPE_CHECKING:
    from mlattack.graph import LabelGraph

Transform = Callable[[torch.Tensor], torch.Tensor]


class UnreadableImageError(OSError):
    """An image file that PIL cannot decode (or that is missing)."""


def load_image(path: str | Path, size: int, *, root: Path | None = None) -> torch.Tensor:
    """Image file -> float tensor ``[3, size, size]`` in [0, 1] (RGB, bilinear resize to a square).

    Raises:
        UnreadableImageError: the file is missing, not a regular file, or cannot be decoded
            (naming it).
        ValueError: with ``root``, the file's real path (after symlinks) leaves ``root``.
    """
    with _open_image(path, root) as opened:
        image = opened.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


@contextmanager
def _open_image(path: str | Path, root: Path | None) -> Iterator[Image.Image]:
    """The decoded image at ``path`` (see :func:`load_image` for the errors)."""
    handle = _open_image_file(path, root)
    try:
        with handle, Image.open(handle) as opened:
            opened.load()  # a full decode: a truncated file fails here, not later
            yield opened
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UnreadableImageError(f"cannot read image {path}: {exc}") from exc


def _open_image_file(path: str | Path, root: Path | None) -> BinaryIO:
    try:
        return open_regular(path, "image", inside=root)
    except OutsideRootError:
        raise
    except (OSError, ValueError) as exc:  # missing, not a regular file, no permission
        raise UnreadableImageError(str(exc)) from exc


def path_inside(root: Path, relative: str, what: str) -> Path:
    """``root / relative``, refused (``ValueError`` naming ``what``) when it would leave ``root``."""
    candidate = Path(relative)
    if not relative or candidate.is_absolute() or ".." in candidate.parts or "\\" in relative:
        raise ValueError(
            f"{what}: {relative!r} is not a path inside the dataset root {root} (absolute paths, "
            "'..' and backslashes are refused)"
        )
    return root / candidate


def require_dir(path: str | Path, what: str) -> Path:
    found = Path(path)
    if not found.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {found}")
    return found


class ImageFileDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Image files with label vectors (base of the file-backed datasets).

    Yields ``(image float [3, size, size] in [0, 1], labels float [C] of 0/1)``. Attributes:
    ``label_names``, ``graph`` (over ``label_names``, or None), ``labels`` (the whole float label
    matrix ``[N, C]``, e.g. for co-occurrence statistics), ``paths``, ``num_skipped``, ``skipped``
    (the indices found unreadable so far), ``images_root`` (None, or the folder every image's
    real path must lie in).
    See the module docstring for how unreadable images are skipped.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        labels: torch.Tensor,
        space: LabelSpace,
        *,
        size: int,
        transform: Transform | None = None,
        validate: bool = False,
        images_root: Path | None = None,
    ) -> None:
        if labels.shape != (len(paths), len(space.names)):
            raise ValueError(
                f"labels shape {tuple(labels.shape)} != ({len(paths)}, {len(space.names)})"
            )
        self.size = check_int(size, "size", minimum=8)
        self.transform = transform
        self.label_names: tuple[str, ...] = space.names
        self.graph: LabelGraph | None = space.graph
        self.paths: list[Path] = list(paths)
        self.labels = labels
        self.images_root = images_root
        self._bad: set[int] = set()
        self._dropped = 0
        if validate:
            self._drop_unreadable()

    @property
    def num_skipped(self) -> int:
        """Unreadable images dropped at construction or met (and refused) so far."""
        return self._dropped + len(self._bad)

    @property
    def skipped(self) -> frozenset[int]:
        """Indices whose image could not be read when asked for (lazy mode)."""
        return frozenset(self._bad)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        count = len(self.paths)
        if not -count <= index < count:
            raise IndexError(f"index {index} out of range for a dataset of {count} images")
        index %= count
        try:
            image = load_image(self.paths[index], self.size, root=self.images_root)
        except UnreadableImageError as exc:
            self._bad.add(index)
            raise UnreadableImageError(
                f"{exc} (image {index}; the dataset option validate: true, or `mlattack train "
                "--validate-images`, drops unreadable images up front)"
            ) from exc
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]

    def _drop_unreadable(self) -> None:
        keep: list[int] = []
        for i, path in enumerate(self.paths):
            try:
                with _open_image(path, self.images_root):  # a full decode
                    keep.append(i)
            except UnreadableImageError as exc:
                warnings.warn(f"dropping an unreadable image: {exc}", RuntimeWarning, stacklevel=3)
        if self.paths and not keep:
            raise ValueError(
                f"none of the {len(self.paths)} images is readable (e.g. {self.paths[0]})"
            )
        self._dropped = len(self.paths) - len(keep)
        self.paths = [self.paths[i] for i in keep]
        self.labels = self.labels[torch.tensor(keep, dtype=torch.long)]
