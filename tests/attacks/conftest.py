"""Tiny multi-label models and inputs shared by the attack tests (also used by the ML-DP/MLA-LP tests).

Fixtures:

- ``linear_model``: logits ``W·flatten(x) + b`` with hand-set ``W``/``b`` (gradients in closed form).
- ``conv_model``: a small conv net with batch norm and dropout (eval/train mode matters), seeded weights.
- ``mlp_model``: a two-layer MLP with seeded weights.
- ``tiny_models``: the three above by name, for parametrized tests.
- ``label_graph``: the :class:`LabelGraph` of :data:`LABEL_NAMES` (skipped until ``mlattack.graph`` exists).
- ``make_case``: ``make_case(model, n=4, seed=0) -> (images, targets)`` with valid turn-off targets.
- ``make_problem``: the :class:`AttackProblem` a loop receives, to test loops and directions directly.
- ``trained_hierarchy``: a small MLP trained in a few seconds on synthetic data with a label hierarchy
  and a spurious co-occurrence (session scope), with its graph and attackable test images.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from mlattack.attacks.base import AttackProblem


@pytest.fixture(autouse=True)
def _single_thread(one_thread: None) -> None:
    """One intra-op thread: the tiny models gain nothing from more, and on a shared, loaded machine
    two threads are several times slower than one."""


#: Labels of the tiny models: a two-level hierarchy (animal -> dog, cat; vehicle -> car, bike).
LABEL_NAMES = ("animal", "dog", "cat", "vehicle", "car", "bike")
LABEL_EDGES = (("animal", "dog"), ("animal", "cat"), ("vehicle", "car"), ("vehicle", "bike"))
IMAGE_SHAPE = (3, 4, 4)
NUM_LABELS = len(LABEL_NAMES)


def linear_weights() -> tuple[Tensor, Tensor]:
    """Hand-set weights: each label looks at its own pixel block, with small shared parts.

    Label c is driven by the pixels ``c·8 ... c·8+7`` of the flattened 48-pixel image (weight +1), and
    every child also reads its parent's block (weight +0.5), so parent and child gradients correlate.
    A mid-grey image (0.5 everywhere) has logit ``4 + 0.5·4·[child] + bias``: biases are chosen so that
    the grey image predicts animal, dog, vehicle and car present, cat and bike absent.
    """
    dim = 48
    weight = torch.zeros(NUM_LABELS, dim)
    for label in range(NUM_LABELS):
        weight[label, label * 8 : label * 8 + 8] = 1.0
    parents = {1: 0, 2: 0, 4: 3, 5: 3}
    for child, parent in parents.items():
        weight[child, parent * 8 : parent * 8 + 8] = 0.5
    #                     animal dog cat vehicle car bike
    bias = torch.tensor([-3.0, -5.0, -7.0, -3.0, -5.0, -7.0])
    return weight, bias


@pytest.fixture
def linear_model(make_linear_model: Callable[[Tensor, Tensor], nn.Module]) -> nn.Module:
    return make_linear_model(*linear_weights())


class SmallConvNet(nn.Module):
    """Conv -> BatchNorm -> ReLU -> pool -> Dropout -> Linear; weights from a fixed seed."""

    def __init__(self, num_labels: int = NUM_LABELS, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.dropout = nn.Dropout(0.5)
        self.head = nn.Linear(8, num_labels)
        with torch.no_grad():
            for param in (self.conv.weight, self.conv.bias, self.head.weight):
                param.copy_(torch.randn(param.shape, generator=generator))
            self.head.bias.copy_(torch.linspace(-0.5, 0.5, num_labels))
            self.norm.running_mean.fill_(0.2)
            self.norm.running_var.fill_(1.5)

    def forward(self, x: Tensor) -> Tensor:
        features = torch.relu(self.norm(self.conv(x))).mean(dim=(2, 3))
        return self.head(self.dropout(features))


class SmallMLP(nn.Module):
    """flatten -> Linear -> tanh -> Linear, weights from a fixed seed."""

    def __init__(self, num_labels: int = NUM_LABELS, hidden: int = 16, seed: int = 1) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        dim = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]
        self.hidden = nn.Linear(dim, hidden)
        self.out = nn.Linear(hidden, num_labels)
        with torch.no_grad():
            for param in (self.hidden.weight, self.out.weight):
                param.copy_(
                    torch.randn(param.shape, generator=generator) / param.shape[1] ** 0.5 * 3
                )
            self.hidden.bias.zero_()
            self.out.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self.out(torch.tanh(self.hidden(x.flatten(1) - 0.5)))


@pytest.fixture
def conv_model() -> SmallConvNet:
    return SmallConvNet().eval()


@pytest.fixture
def mlp_model() -> SmallMLP:
    return SmallMLP().eval()


@pytest.fixture(params=["linear", "conv", "mlp"])
def tiny_model(
    request: pytest.FixtureRequest, make_linear_model: Callable[[Tensor, Tensor], nn.Module]
) -> nn.Module:
    """Each tiny model in turn (parametrized fixture)."""
    if request.param == "linear":
        return make_linear_model(*linear_weights())
    return (SmallConvNet() if request.param == "conv" else SmallMLP()).eval()


@pytest.fixture(scope="session")
def label_graph() -> Any:
    graph_module = pytest.importorskip("mlattack.graph")
    return graph_module.LabelGraph(LABEL_NAMES, LABEL_EDGES)


def present_targets(model: nn.Module, images: Tensor, threshold: float = 0.0) -> Tensor:
    """One turn-off target per image: its present label of highest index (None present -> error)."""
    with torch.no_grad():
        present = model(images) > threshold
    if not present.any(dim=1).all():
        raise AssertionError("test images must have at least one present label each")
    highest = (present.long() * torch.arange(1, present.shape[1] + 1)).argmax(dim=1)
    return torch.nn.functional.one_hot(highest, present.shape[1]).bool()


@pytest.fixture
def make_case() -> Callable[..., tuple[Tensor, Tensor]]:
    """``make_case(model, n=4, seed=0)``: images in [0, 1] around mid-grey and one valid target each.

    The images take the dtype of the model's parameters.
    """

    def build(model: nn.Module, n: int = 4, seed: int = 0) -> tuple[Tensor, Tensor]:
        generator = torch.Generator().manual_seed(seed)
        images = (0.5 + 0.2 * (torch.rand((n, *IMAGE_SHAPE), generator=generator) - 0.5)).clamp(
            0, 1
        )
        images = images.to(next(model.parameters()).dtype)
        return images, present_targets(model, images)

    return build


def build_problem(
    model: nn.Module, images: Tensor, flip_set: Tensor, eps: float = 0.1
) -> AttackProblem:
    """The :class:`AttackProblem` the base class would hand to a loop (threshold 0.5, no seed)."""
    with torch.no_grad():
        logits = model(images)
    pred = logits > 0
    return AttackProblem(
        images=images,
        eps=torch.full((images.shape[0],), eps, dtype=images.dtype),
        clean_logits=logits,
        clean_pred=pred,
        targets=flip_set,
        flip_set=flip_set,
        desired=pred ^ flip_set,
        logit_threshold=0.0,
        seed=None,
        model=model,
    )


@pytest.fixture
def make_problem() -> Callable[..., AttackProblem]:
    """``make_problem(model, images, flip_set, eps=0.1)``: see :func:`build_problem`."""
    return build_problem


def strongest_present_label(logits: Tensor) -> Tensor:
    """Targets bool ``[B, C]``: each image's most confident present label (logit > 0)."""
    targets = torch.zeros_like(logits, dtype=torch.bool)
    targets[torch.arange(logits.shape[0]), (logits * (logits > 0)).argmax(dim=1)] = True
    return targets


@pytest.fixture
def strongest_present() -> Callable[[Tensor], Tensor]:
    """``strongest_present(logits)``: see :func:`strongest_present_label`."""
    return strongest_present_label


# ---------------------------------------------------------------------------------------------
# A small trained model with correlated labels (paper's setting in miniature).

#: Trained-model labels: two hierarchies plus "grass", which co-occurs with "dog" (spuriously).
TRAINED_NAMES = ("animal", "dog", "cat", "vehicle", "car", "bike", "grass")
TRAINED_EDGES = LABEL_EDGES
TRAINED_SHAPE = (3, 16, 16)
PARENT_STRENGTH = 2.0  # parents have their own, stronger evidence than a single child
PARENT_ALONE = 0.3  # share of scenes with a parent but none of its known children
SIGNAL = 0.05  # pixel amplitude of one label pattern
NOISE = 0.05  # pixel noise (std)


@dataclass
class TrainedHierarchy:
    model: nn.Module
    graph: Any
    images: Tensor  # attackable test images: dog and animal predicted present, cat absent
    targets: Tensor  # Omega = {dog}; its consistent target set is {dog, animal}


def _synthetic_scenes(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Images that are sums of label patterns: a parent pattern whenever any of its children shows."""
    dim = TRAINED_SHAPE[0] * TRAINED_SHAPE[1] * TRAINED_SHAPE[2]
    # Random +-1 pixel patterns, one per label (nearly orthogonal in this dimension).
    signs = torch.randint(
        0, 2, (len(TRAINED_NAMES), dim), generator=torch.Generator().manual_seed(7)
    )
    patterns = 2.0 * signs - 1.0
    labels = torch.zeros(n, len(TRAINED_NAMES))
    # Children are drawn independently (not mutually exclusive: no "dog, hence not cat" shortcut).
    for parent, children in ((0, (1, 2)), (3, (4, 5))):
        for child in children:
            labels[:, child] = (torch.rand(n, generator=generator) < 0.35).float()
        # Some scenes show a parent without any of the known children ("another animal"), so
        # that a parent is recognised from its own evidence rather than from its children's.
        alone = (torch.rand(n, generator=generator) < PARENT_ALONE).float()
        labels[:, parent] = torch.maximum(labels[:, list(children)].amax(dim=1), alone)
    # grass goes with dog 90 % of the time and seldom otherwise.
    grass_rate = torch.where(labels[:, 1] > 0, 0.9, 0.1)
    labels[:, 6] = (torch.rand(n, generator=generator) < grass_rate).float()
    strength = torch.tensor([PARENT_STRENGTH, 1.0, 1.0, PARENT_STRENGTH, 1.0, 1.0, 1.0])
    signal = (labels * strength) @ patterns
    noise = NOISE * torch.randn((n, dim), generator=generator)
    images = (0.5 + SIGNAL * signal + noise).clamp(0, 1)
    return images.view(n, *TRAINED_SHAPE), labels


@pytest.fixture(scope="session")
def trained_hierarchy(
    single_thread: Callable[[], AbstractContextManager[None]],
) -> TrainedHierarchy:
    graph_module = pytest.importorskip("mlattack.graph")
    with single_thread():
        return build_trained_hierarchy(graph_module.LabelGraph)


def build_trained_hierarchy(graph_class: Any) -> TrainedHierarchy:
    """Train the MLP (a few seconds on one core) and select the attackable test images."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    train_x, train_y = _synthetic_scenes(2000, generator)
    test_x, _ = _synthetic_scenes(400, generator)
    dim = train_x[0].numel()
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(dim, 64), nn.ReLU(), nn.Linear(64, len(TRAINED_NAMES))
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    for _ in range(300):
        batch = torch.randint(0, train_x.shape[0], (128,), generator=generator)
        optimizer.zero_grad()
        loss_fn(model(train_x[batch]), train_y[batch]).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        pred = model(test_x) > 0
    # Images where dog and animal are predicted present and cat absent: Ψ({dog}) = {dog, animal}.
    keep = pred[:, 1] & pred[:, 0] & ~pred[:, 2]
    targets = torch.zeros(int(keep.sum()), len(TRAINED_NAMES), dtype=torch.bool)
    targets[:, 1] = True
    graph = graph_class(TRAINED_NAMES, TRAINED_EDGES)
    return TrainedHierarchy(model=model, graph=graph, images=test_x[keep], targets=targets)
