"""Fuzzing the files a dataset or a graph is read from (issue 17): non-regular files, symlinks,
encodings and CSV limits.

Each example builds an image folder whose ``labels.csv`` and images, and a graph file, are each
replaced by one hazard at most: a FIFO, a directory, a missing file, a symlink inside the root, a
symlink leaving it, a broken symlink, a symlink to a FIFO outside, or (for the CSV) a byte-order
mark, latin-1 bytes, a NUL byte or a field over the CSV reader's limit. The graph file is named by
its own path, so it may lie anywhere.

Every build is either accepted, and then each image reads as a ``[3, S, S]`` tensor in ``[0, 1]``
or raises ``UnreadableImageError`` naming its file (never another image's pixels), or refused
with a ``ValueError``/``FileNotFoundError`` naming the file. A symlink leaving the root is never
read. A hang (a FIFO opened for reading) fails through the timeout; any other exception fails.
Outcomes are counted and printed by the last test (``pytest -s``). Runs under the deterministic
hypothesis profile of ``tests/conftest.py``.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mlattack.data import ImageFolderDataset, UnreadableImageError
from mlattack.graph import LabelGraph

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs and symlinks")

OUTCOMES: Counter[tuple[str, str]] = Counter()
_cases = itertools.count()
COLOURS = ((220, 30, 30), (30, 200, 40), (20, 40, 230))
FILE_HAZARDS = [
    "regular",
    "fifo",
    "directory",
    "missing",
    "link inside",
    "link outside",
    "broken link",
    "link to fifo",
]
CSV_HAZARDS = [*FILE_HAZARDS, "bom", "latin-1", "nul byte", "huge field"]
SIZE = 12


def place(path: Path, hazard: str, content: bytes, outside: Path, inside: Path) -> None:
    """Put ``content`` at ``path``, or the hazard instead (``inside``/``outside``: link targets)."""
    if hazard == "fifo":
        os.mkfifo(path)
    elif hazard == "directory":
        path.mkdir()
    elif hazard == "link inside":
        inside.write_bytes(content)
        path.symlink_to(inside)
    elif hazard == "link outside":
        outside.write_bytes(content)
        path.symlink_to(outside)
    elif hazard == "broken link":
        path.symlink_to(path.parent / "nowhere")
    elif hazard == "link to fifo":
        os.mkfifo(outside)
        path.symlink_to(outside)
    elif hazard != "missing":
        path.write_bytes(content)


def image_bytes(colour: tuple[int, int, int]) -> bytes:
    path = Path(tempfile.mkstemp(suffix=".png")[1])
    Image.new("RGB", (SIZE + 2, SIZE), colour).save(path)
    data = path.read_bytes()
    path.unlink()
    return data


IMAGES = [image_bytes(colour) for colour in COLOURS]


def csv_content(hazard: str) -> bytes:
    rows = "filename,labels\n0.png,cat;animal\n1.png,car\n2.png,cat\n"
    if hazard == "bom":
        return b"\xef\xbb\xbf" + rows.encode()
    if hazard == "latin-1":
        return rows.replace("car", "caf\xe9").encode("latin-1")
    if hazard == "nul byte":
        return rows.replace("car", "c\0r").encode()
    if hazard == "huge field":
        return rows.replace("car", "x" * 131_073).encode()
    return rows.encode()


@settings(max_examples=120, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    csv_hazard=st.sampled_from(CSV_HAZARDS),
    image_hazards=st.lists(st.sampled_from(FILE_HAZARDS), min_size=3, max_size=3),
    graph_hazard=st.sampled_from([None, *FILE_HAZARDS]),
)
@pytest.mark.timeout(60)
def test_fuzz_dataset_files(
    tmp_path: Path, csv_hazard: str, image_hazards: list[str], graph_hazard: str | None
) -> None:
    case = tmp_path / f"case{next(_cases)}"
    root, outside = case / "root", case / "outside"
    root.mkdir(parents=True)
    outside.mkdir()
    place(
        root / "labels.csv",
        csv_hazard if csv_hazard in FILE_HAZARDS else "regular",
        csv_content(csv_hazard),
        outside / "labels.csv",
        root / "real-labels.csv",
    )
    for i, hazard in enumerate(image_hazards):
        place(root / f"{i}.png", hazard, IMAGES[i], outside / f"{i}.png", root / f"real-{i}.png")
    graph = None
    if graph_hazard is not None:
        document = LabelGraph(["animal", "cat", "car"], [("animal", "cat")]).to_json()
        graph_bytes = json.dumps(document).encode()
        graph_path = root / "graph.json"
        place(graph_path, graph_hazard, graph_bytes, outside / "graph.json", root / "real.json")
        graph = str(graph_path)

    try:
        dataset = ImageFolderDataset(root, size=SIZE, graph=graph)
    except (ValueError, FileNotFoundError) as exc:
        message = str(exc)
        assert any(name in message for name in ("labels.csv", "graph.json", "nowhere")), message
        record("dataset", f"refused ({type(exc).__name__})")
        return
    assert csv_hazard in ("regular", "bom", "link inside"), f"accepted CSV hazard {csv_hazard}"
    # a graph file is named by its own path, which may lie anywhere
    accepted_graphs = (None, "regular", "link inside", "link outside")
    assert graph_hazard in accepted_graphs, f"accepted graph {graph_hazard}"
    record("dataset", "accepted")
    for i, hazard in enumerate(image_hazards):
        try:
            image, _ = dataset[i]
        except UnreadableImageError as exc:
            assert f"{i}.png" in str(exc), exc
            assert hazard not in ("regular", "link inside", "link outside"), (hazard, exc)
            record("image", "unreadable")
            continue
        except ValueError as exc:
            assert hazard in ("link outside", "link to fifo"), (hazard, exc)
            assert "leads outside the dataset root" in str(exc), exc
            assert f"{i}.png" in str(exc), exc
            record("image", "refused (outside the root)")
            continue
        assert hazard in ("regular", "link inside"), f"read image hazard {hazard}"
        assert image.shape == (3, SIZE, SIZE) and image.min() >= 0 and image.max() <= 1
        expected = COLOURS[i]
        channel = max(range(3), key=lambda c: expected[c])
        assert int(image[channel].mean() * 255) > 150  # its own pixels, not another image's
        record("image", "read")


def record(test: str, outcome: str) -> None:
    OUTCOMES[(test, outcome)] += 1


def test_fuzz_outcomes_are_counted() -> None:
    """Prints the outcome counts (``pytest -s``); runs after the fuzz test of this file."""
    if not OUTCOMES:
        pytest.skip("run together with the fuzz test of this file")
    for (test, outcome), count in sorted(OUTCOMES.items()):
        print(f"fuzz files {test:<8} {outcome:<28} {count}")
    outcomes = {outcome for _, outcome in OUTCOMES}
    assert {"accepted", "read", "unreadable", "refused (outside the root)"} <= outcomes
    assert any(outcome.startswith("refused (") for outcome in outcomes)
