"""Reading the package's own file formats: errors that name the file (imports nothing from mlattack)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["read_json_file"]


def read_json_file(path: Path, what: str) -> Any:
    """Parse the JSON file ``path``; a missing, malformed or too deeply nested file raises
    ``ValueError`` naming it.

    ``what`` says what the file is, e.g. ``"label graph file"``, for the message.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{what} {str(path)!r} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{what} {str(path)!r} is not valid JSON: {error}") from None
    except RecursionError:  # the parser recurses once per nesting level
        raise ValueError(
            f"{what} {str(path)!r} is nested too deeply to be parsed (more than about "
            f"{sys.getrecursionlimit()} levels)"
        ) from None
    except OSError as error:  # a directory, no permission, ...
        raise ValueError(f"{what} {str(path)!r} cannot be read: {error.strerror}") from None
