"""``mlattack train`` end to end on tiny data (synthetic scenes and an image folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlattack import models
from mlattack.cli import main

TINY_MODEL = '{"backbone": {"name": "small-cnn", "widths": [8, 16]}, "input_size": 16}'


@pytest.mark.slow
def test_train_synthetic_saves_a_loadable_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scenes.pt"
    code = main(
        ["train", "--model", "small-cnn", "--dataset", "synthetic", "--n-train", "64", "--n-val", "32",
         "--image-size", "16", "--model-options", TINY_MODEL, "--epochs", "1", "--lr", "0.01",
         "--batch-size", "32", "--seed", "1", "--no-progress", "--out", str(out)]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0 and out.is_file()
    assert "epoch 1/1" in printed and "held-out mAP" in printed
    assert "P(tee predicted | ring predicted)" in printed
    model = models.load(out)
    assert len(model.label_names) == 20 and model.graph is not None
    assert model(torch.rand(2, 3, 16, 16)).shape == (2, 20)
    training = models.read_metadata(out)["extra"]["training"]
    assert len(training["epochs"]) == 1 and training["correlations"][0]["a"] == "ring"


def test_train_on_a_folder_with_a_held_out_fraction(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "imgs"
    root.mkdir()
    rows = ["filename,labels"]
    for i in range(10):
        colour = np.zeros((12, 12, 3), dtype=np.uint8)
        colour[..., i % 3] = 255
        Image.fromarray(colour).save(root / f"{i}.png")
        rows.append(f"{i}.png,{['red', 'green', 'blue'][i % 3]};colour")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "folder.pt"
    code = main(
        ["train", "--model", "small-cnn", "--dataset", "folder", "--root", str(root), "--image-size", "16",
         "--model-options", TINY_MODEL, "--epochs", "1", "--batch-size", "4", "--val-fraction", "0.4",
         "--no-progress", "--out", str(out)]
    )  # fmt: skip
    assert code == 0 and models.load(out).label_names == ("blue", "colour", "green", "red")
    assert "6 images, 4 held out" in capsys.readouterr().out


def test_cli_errors_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "x.pt")
    assert main(["train", "--model", "small-cnn", "--dataset", "voc", "--out", out]) == 2
    assert "--root" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--model",
                "small-cnn",
                "--dataset",
                "voc",
                "--root",
                str(tmp_path / "no"),
                "--out",
                out,
            ]
        )
        == 2
    )
    assert "no" in capsys.readouterr().err
    code = main(
        [
            "train",
            "--model",
            "small-cnn",
            "--dataset",
            "synthetic",
            "--graph",
            "builtin:voc",
            "--out",
            out,
        ]
    )
    assert code == 2 and "own taxonomy" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(
            [
                "train",
                "--model",
                "small-cnn",
                "--dataset",
                "synthetic",
                "--model-options",
                "[1]",
                "--out",
                out,
            ]
        )


def test_train_on_only_unreadable_images_exits_2_naming_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "broken"
    root.mkdir()
    names = [f"{i}.jpg" for i in range(6)]
    for name in names:
        (root / name).write_bytes(b"\xff\xd8\xff\xe0 a truncated JPEG")
    (root / "labels.csv").write_text(
        "filename,labels\n"
        + "".join(f"{n},{'cat' if i % 2 else 'dog'}\n" for i, n in enumerate(names))
    )
    with pytest.warns(RuntimeWarning):
        code = main(
            ["train", "--model", "small-cnn", "--dataset", "folder", "--root", str(root),
             "--labels-csv", str(root / "labels.csv"), "--image-size", "16", "--epochs", "1",
             "--no-progress", "--out", str(tmp_path / "m.pt")]
        )  # fmt: skip
    assert code == 2
    assert "readable" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps", "gpu"])
def test_a_device_this_machine_lacks_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, device: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    out = tmp_path / "model.pt"
    code = main(
        ["train", "--model", "small-cnn", "--dataset", "synthetic", "--n-train", "8", "--n-val", "4",
         "--image-size", "16", "--model-options", TINY_MODEL, "--epochs", "1", "--device", device,
         "--no-progress", "--out", str(out)]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 2 and not out.exists() and "training" not in captured.out
    assert captured.err.startswith("mlattack train: error: --device: ")
    assert captured.err.count("\n") == 1 and repr(device) in captured.err
