"""Checkpoints: save/load round trips rebuild models from the file alone; bad files fail clearly."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from mlattack.graph import LabelGraph
from mlattack.models import build_model, load, read_metadata, register_model, save
from mlattack.models.checkpoint import CHECKPOINT_FORMAT


def _trained_a_little(model: nn.Module) -> nn.Module:
    """Move weights and BatchNorm statistics away from their initial values."""
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    loss = model(torch.rand(4, 3, 32, 32)).sigmoid().sum()
    loss.backward()
    optimiser.step()
    return model.eval()


@pytest.mark.slow
def test_round_trip_gives_identical_outputs(
    family: str, family_options: dict[str, Any], tmp_path: Path, tiny_graph: LabelGraph
) -> None:
    torch.manual_seed(0)
    model = build_model(
        family,
        graph=tiny_graph,
        backbone={"name": "tiny-resnet", "widths": [4]},
        input_size=32,
        **family_options,
    )
    model = _trained_a_little(model)
    path = save(model, tmp_path / f"{family}.pt", extra={"epochs": 2, "map": [0.5, 0.75]})

    torch.manual_seed(123)  # rebuilding must not depend on the random state
    loaded = load(path)

    assert type(loaded) is type(model)
    assert not loaded.training
    assert loaded.config() == model.config()
    assert loaded.label_names == model.label_names
    assert loaded.graph is not None
    assert loaded.graph.names == tiny_graph.names
    assert loaded.graph.to_json() == tiny_graph.to_json()
    images = torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))


def test_metadata_contents(tmp_path: Path, tiny_graph: LabelGraph) -> None:
    model = build_model(
        "small-cnn", graph=tiny_graph, input_size=48, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
    )
    path = save(model, tmp_path / "nested" / "model.pt", extra={"dataset": "synthetic"})
    metadata = read_metadata(path)
    assert metadata["model"] == model.config()
    assert metadata["label_names"] == list(tiny_graph.names)
    assert metadata["graph"] == tiny_graph.to_json()
    assert metadata["input_size"] == 48
    assert metadata["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    assert metadata["preprocessing"]["input_size"] == 48
    assert metadata["extra"] == {"dataset": "synthetic"}
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == CHECKPOINT_FORMAT and raw["version"] == 1
    assert list(tmp_path.joinpath("nested").iterdir()) == [path]  # no temporary left behind


def test_model_without_graph_round_trips(tmp_path: Path) -> None:
    model = build_model("small-cnn", num_labels=3).eval()
    loaded = load(save(model, tmp_path / "plain.pt"))
    assert loaded.graph is None and loaded.label_names == model.label_names


def test_bare_state_dict_is_rejected_with_advice(tmp_path: Path) -> None:
    model = build_model("small-cnn", num_labels=3)
    path = tmp_path / "bare.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(ValueError, match=r"bare.pt: not an mlattack checkpoint \(no metadata"):
        load(path)


def test_label_count_mismatch_is_reported(tmp_path: Path) -> None:
    path = save(build_model("small-cnn", num_labels=3), tmp_path / "three.pt")
    with pytest.raises(ValueError, match="three.pt: the checkpoint has 3 labels but 5 were asked"):
        load(path, num_labels=5)
    assert len(load(path, num_labels=3).label_names) == 3


def _rewrite_metadata(path: Path, change: Any) -> None:
    payload = torch.load(path, weights_only=True)
    metadata = json.loads(payload["metadata_json"])
    change(metadata)
    payload["metadata_json"] = json.dumps(metadata)
    torch.save(payload, path)


def test_unknown_model_name_is_reported(tmp_path: Path) -> None:
    path = save(build_model("small-cnn", num_labels=3), tmp_path / "odd.pt")
    _rewrite_metadata(path, lambda m: m["model"].update(name="mystery-net"))
    with pytest.raises(ValueError, match="odd.pt: cannot rebuild.*unknown model 'mystery-net'"):
        load(path)


def test_weights_that_do_not_fit_are_reported(tmp_path: Path) -> None:
    path = save(build_model("small-cnn", num_labels=3), tmp_path / "shape.pt")
    _rewrite_metadata(
        path, lambda m: m["model"].update(backbone={"name": "small-cnn", "widths": [8]})
    )
    with pytest.raises(ValueError, match="shape.pt: weights do not fit"):
        load(path)


def test_other_bad_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        load(tmp_path / "absent.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="garbage.pt: cannot be read"):
        load(garbage)
    future = save(build_model("small-cnn", num_labels=2), tmp_path / "future.pt")
    payload = torch.load(future, weights_only=True)
    payload["version"] = 99
    torch.save(payload, future)
    with pytest.raises(ValueError, match="future.pt: checkpoint format version 99"):
        load(future)


@pytest.mark.parametrize(
    "content",
    [
        b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n",
        b"just some text\n",
        b"",
        b"PK\x03\x04 a zip header and nothing else",
        b"\x80\x02}q\x00.",  # a tiny protocol-2 pickle of {}: no checkpoint inside
    ],
    ids=["passwd", "text", "empty", "zip-header", "pickle"],
)
def test_files_that_are_not_checkpoints_name_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"model\.pt: (cannot be read|not an mlattack checkpoint)"):
        load(path)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_truncated_checkpoints_name_the_file(tmp_path: Path, keep: float) -> None:
    whole = save(build_model("small-cnn", num_labels=2), tmp_path / "whole.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole[: int(len(whole) * keep)])
    with pytest.raises(ValueError, match=r"cut\.pt: cannot be read .*truncated, damaged"):
        load(cut)


class _Executes:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("code ran while loading",))


def test_loading_executes_nothing_from_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "payload": _Executes()}, path)
    with pytest.raises(ValueError, match="evil.pt: cannot be read"):
        load(path)
    assert "code ran" not in capsys.readouterr().out


def test_save_rejects_models_without_config_and_non_json_extra(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="no config"):
        save(nn.Linear(2, 2), tmp_path / "linear.pt")
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        save(build_model("small-cnn", num_labels=2), tmp_path / "x.pt", extra={"when": object()})


class _Doubler(nn.Module):
    """A user model registered under its own name, rebuilt by the default from-config path."""

    def __init__(self, *, num_labels: int, scale: float = 2.0) -> None:
        super().__init__()
        self.label_names = tuple(f"y{i}" for i in range(num_labels))
        self.graph = None
        self.input_size = 8
        self.scale = scale
        self.linear = nn.Linear(3, num_labels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(images.mean(dim=(2, 3))) * self.scale
        return out

    def config(self) -> dict[str, Any]:
        return {"name": "test-doubler", "num_labels": len(self.label_names), "scale": self.scale}


def test_registered_user_model_round_trips(tmp_path: Path) -> None:
    register_model("test-doubler", _Doubler, overwrite=True)
    model = build_model("test-doubler", num_labels=2, scale=3.0)
    with pytest.raises(ValueError, match="does not take 'backbone'"):
        build_model("test-doubler", num_labels=2, backbone="small-cnn")
    loaded = load(save(model, tmp_path / "doubler.pt"))
    images = torch.rand(1, 3, 8, 8)
    assert torch.equal(loaded(images), model(images))
    with pytest.raises(ValueError, match="already registered"):
        register_model("test-doubler", lambda **kw: _Doubler(**kw))


def test_registry_checks_outputs_of_builders_without_num_labels() -> None:
    def fixed(*, scale: float = 1.0) -> nn.Module:
        return _Doubler(num_labels=4, scale=scale)

    register_model("test-fixed", fixed, overwrite=True)
    assert len(build_model("test-fixed", num_labels=4).label_names) == 4
    with pytest.raises(ValueError, match="has 4 outputs but num_labels=3"):
        build_model("test-fixed", num_labels=3)


def test_imagenet_hierarchy_model_is_reachable_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    """``load`` dispatches 'imagenet-hierarchy' by importing mlattack.models.imagenet on demand."""
    from mlattack.models import registry

    fake = types.ModuleType("fake_imagenet")
    fake.ImageNetHierarchyModel = lambda **kw: _Doubler(num_labels=2, **kw)  # type: ignore[attr-defined]
    monkeypatch.setitem(
        registry._LAZY_FAMILIES, "test-lazy", ("fake_imagenet", "ImageNetHierarchyModel")
    )
    monkeypatch.setitem(__import__("sys").modules, "fake_imagenet", fake)
    monkeypatch.delitem(registry._REGISTRY, "test-lazy", raising=False)
    assert "test-lazy" in registry.available_models()
    model = build_model("test-lazy", scale=5.0)
    assert model.scale == 5.0
    monkeypatch.delitem(registry._REGISTRY, "test-lazy")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("nan", r"weight '.*weight' holds NaN or infinite values"),
        ("inf", r"weight '.*weight' holds NaN or infinite values"),
        ("variance", r"BatchNorm variance '.*running_var' has negative entries \(min -1\)"),
    ],
)
def test_damaged_weights_are_refused_naming_the_tensor(
    tmp_path: Path, damage: str, message: str
) -> None:
    model = build_model("small-cnn", num_labels=3, input_size=32)
    path = save(model, tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    state = payload["state_dict"]
    if damage == "variance":
        name = next(k for k in state if k.endswith("running_var"))
        state[name][0] = -1.0
    else:
        name = next(k for k in state if k.endswith("weight") and state[k].dim() > 1)
        state[name].view(-1)[0] = float(damage)
    torch.save(payload, path)
    with pytest.raises(ValueError, match=rf"model.pt: {message}"):
        load(path)
