"""Reading ML-GCN's data pickles (``*_glove_word2vec.pkl``, ``*_adj.pkl``) without running code.

A pickle may call any importable function while it loads. These files hold numpy arrays (alone or
in a dict) only, so :func:`read_numpy_pickle` uses an unpickler that can build numpy arrays and
nothing else: any other global in the stream stops it with a ValueError naming the file.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

try:  # numpy >= 2 moved numpy.core to numpy._core
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]

# The globals that numpy's own ndarray pickles refer to (numpy 1.x and 2.x module names).
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): scalar,
    ("numpy._core.multiarray", "scalar"): scalar,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, source: Path) -> None:
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise ValueError(
                f"{self.source}: the pickle refers to {module}.{name}; only numpy arrays are "
                "read from ML-GCN's data pickles"
            )
        return allowed


def read_numpy_pickle(path: str | Path) -> Any:
    """The contents of a pickle made of numpy arrays, dicts, lists and numbers (safely).

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file: a truncated or damaged pickle, or one that refers to anything
            but numpy's array constructors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pickle not found: {path}")
    with path.open("rb") as handle:
        try:
            return _NumpyOnlyUnpickler(handle, path).load()
        except ValueError:
            raise
        except Exception as error:  # EOFError, UnpicklingError, ...: all mean "not readable"
            raise ValueError(
                f"{path}: cannot be read as a pickle of numpy arrays ({error or type(error).__name__})"
            ) from error
