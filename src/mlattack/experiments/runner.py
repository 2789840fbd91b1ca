"""The experiment runner: config -> clean predictions -> target sets -> attacks -> results store.

The work is a fixed, deterministic list of *units* (one attack at one ε over one batch of the images
chosen for one target set; plus gradient-correlation and transfer batches). Each unit is committed to
the store atomically with its marker, so an interrupted run resumes by skipping marked units and ends
with exactly the rows an uninterrupted run writes. Under ``torchrun`` (``RANK``/``WORLD_SIZE`` in the
environment) rank ``r`` takes units ``r, r + W, r + 2W, ...`` and writes ``results-rank{r}.sqlite``.
"""

from __future__ import annotations

import math
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from matplotlib.image import imsave
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

import mlattack
from mlattack.experiments.builders import (
    build_dataset_from_spec,
    build_model_from_spec,
    dataset_length,
    ground_truth_columns,
    label_names_of,
    resolve_graph,
)
from mlattack.experiments.config import AttackSpec, ExperimentConfig
from mlattack.experiments.store import (
    ResultStore,
    StoreError,
    encode_labels,
    find_stores,
    label_mask,
    rank_store_path,
)
from mlattack.experiments.targets import (
    TargetSet,
    choose_images,
    draw_target_sets,
    eligible_images,
)
from mlattack.losses import logit_threshold

if TYPE_CHECKING:
    from mlattack.graph import LabelGraph

EXAMPLES_DIR = "examples"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class _Unit:
    unit_id: str
    kind: str  # "attack" | "gradcorr" | "transfer"
    ts: TargetSet
    image_ids: tuple[int, ...]
    position: int  # index of the first image of this batch within the target set's images
    attack: AttackSpec | None = None
    eps: float = 0.0
    source: str | None = None


@dataclass
class _Scan:
    """Clean predictions (and ground truth) of the scanned images, as bool numpy arrays."""

    clean_pred: np.ndarray  # [N, C]
    ground_truth: np.ndarray | None  # [N, C]


def distributed_rank() -> tuple[int, int]:
    """``(rank, world_size)`` from the torchrun environment, ``(0, 1)`` outside it."""
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return rank, world


def run_experiment(
    config: ExperimentConfig | str | Path,
    out_dir: str | Path,
    *,
    progress: bool = True,
    force: bool = False,
    model: nn.Module | None = None,
    dataset: Dataset[Any] | None = None,
    transfer_models: dict[str, nn.Module] | None = None,
    base_dir: str | Path | None = None,
) -> Path:
    """Run (or resume) an experiment and return its run directory.

    ``config`` is an :class:`ExperimentConfig` or a YAML path (relative checkpoint/graph paths are
    then also looked up beside it). ``model`` / ``dataset`` replace the ones the config names (for
    library use: already-built objects; ``transfer_models`` maps the transfer section's model names to
    models). ``force`` deletes earlier results in ``out_dir`` first.
    """
    if not isinstance(config, ExperimentConfig):
        base_dir = base_dir if base_dir is not None else Path(config).resolve().parent
        config = ExperimentConfig.from_yaml(config)
    base = Path(base_dir) if base_dir is not None else None
    run_dir = Path(out_dir)
    rank, world = distributed_rank()
    _prepare_run_dir(run_dir, config, force=force and rank == 0)

    _check_attacks_available(config)
    torch.manual_seed(config.seed)
    device = _device(config.device)
    if model is None:
        model = build_model_from_spec(config.model, base_dir=base)
    model = model.to(device).eval()
    if dataset is None:
        dataset = build_dataset_from_spec(config.dataset, model)
    names = label_names_of(model)
    graph, outside = resolve_graph(config.graph, model, dataset, base_dir=base)
    _check_attack_options(config, model, graph)
    columns = ground_truth_columns(dataset, names)

    n_scan = dataset_length(dataset)
    if config.images.max_images is not None:
        n_scan = min(n_scan, config.images.max_images)
    scan = _scan(
        model, dataset, n_scan, columns, config, device, progress=progress, what="clean predictions"
    )
    target_sets = _plan_target_sets(config, names, graph, outside, scan)

    transfer_nets, transfer_preds, transfer_images = _prepare_transfer(
        config, transfer_models or {}, names, dataset, n_scan, columns, graph, target_sets,
        device=device, base=base, progress=progress,
    )  # fmt: skip

    meta = {
        "config_hash": config.config_hash(),
        "config": config.model_dump(mode="json"),
        "model": config.model.display_name,
        "label_names": list(names),
        "graph": graph.to_json(),
        "outside_graph": list(outside),
        "has_ground_truth": columns is not None,
        "n_scanned": n_scan,
        "mlattack_version": mlattack.__version__,
    }
    units = _work_list(config, target_sets, transfer_images)
    done: set[str] = set()
    with ResultStore.create_or_open(rank_store_path(run_dir, rank), meta) as store:
        store.record_target_sets(
            (
                ts.ts_id,
                ts.size,
                encode_labels(label_mask(ts.labels, len(names))),
                ts.n_eligible,
                len(ts.image_ids),
            )
            for ts in target_sets
        )
        for path in find_stores(run_dir):
            if path == store.path:
                done |= store.done_units()
            else:
                with ResultStore.open_readonly(path) as other_store:
                    done |= other_store.done_units()
        mine = [u for i, u in enumerate(units) if i % world == rank and u.unit_id not in done]
        context = _Context(
            config,
            model,
            dataset,
            graph,
            scan,
            run_dir,
            device,
            target_sets,
            transfer_nets,
            transfer_preds,
        )
        bar = tqdm(
            mine,
            desc=f"{config.name} (rank {rank})" if world > 1 else config.name,
            disable=not progress,
            unit="batch",
        )
        for unit in bar:
            store.write_unit(unit.unit_id, **context.execute(unit))
    return run_dir


# -- preparation -------------------------------------------------------------------------------
def _check_attacks_available(config: ExperimentConfig) -> None:
    from mlattack.attacks import ATTACKS

    names = [a.name for a in config.attacks]
    if config.transfer is not None:
        names.append(config.transfer.attack.name)
    missing = sorted({n for n in names if n not in ATTACKS})
    if missing:
        raise ValueError(
            f"config key 'attacks': {missing} not available in this installation "
            f"(available: {', '.join(sorted(ATTACKS))})"
        )


def _configured_attack(
    config: ExperimentConfig, spec: AttackSpec, model: nn.Module, graph: LabelGraph, eps: float
) -> Any:
    from mlattack.attacks import build_attack

    options = {"threshold": config.threshold, "seed": config.seed, **spec.options}
    return build_attack(spec.name, model, graph=graph, eps=eps, on_invalid="skip", **options)


def _check_attack_options(config: ExperimentConfig, model: nn.Module, graph: LabelGraph) -> None:
    """Build every configured attack once, so a bad option is named before the long clean scan."""
    specs = [(f"attacks[{i}]", spec, config.eps) for i, spec in enumerate(config.attacks)]
    if config.transfer is not None:
        specs.append(("transfer.attack", config.transfer.attack, [config.transfer.eps]))
    for key, spec, eps_values in specs:
        for eps in eps_values:
            try:
                _configured_attack(config, spec, model, graph, eps)
            except (TypeError, ValueError) as exc:
                kind = ValueError if isinstance(exc, ValueError) else TypeError
                where = f"config key '{key}' ({spec.display_name}, eps={eps})"
                raise kind(f"{where}: {exc}") from exc


def _device(name: str) -> torch.device:
    """``cuda`` means this rank's GPU under torchrun (``LOCAL_RANK``)."""
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(name)


def _prepare_run_dir(run_dir: Path, config: ExperimentConfig, *, force: bool) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"run directory {run_dir} is a file; give another '--out' directory")
    if force and run_dir.exists():
        for path in run_dir.glob("results-rank*.sqlite*"):
            path.unlink()
        for name in (EXAMPLES_DIR, "report"):
            shutil.rmtree(run_dir / name, ignore_errors=True)
        (run_dir / CONFIG_FILE).unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_file = run_dir / CONFIG_FILE
    canonical = config.canonical_json()
    for path in find_stores(run_dir):
        with ResultStore.open_readonly(path) as store:
            theirs = store.meta().get("config_hash")
        if theirs != config.config_hash():
            raise StoreError(
                f"{run_dir} holds results of a different config ({path.name}, hash {theirs}); refusing "
                f"to mix them. Start fresh with '--force' (deletes the old results), another '--out' "
                f"directory, or delete {run_dir} yourself."
            )
    if not config_file.exists():
        config_file.write_text(canonical + "\n", encoding="utf-8")


def _scan(
    model: nn.Module,
    dataset: Dataset[Any],
    n_images: int,
    columns: torch.Tensor | None,
    config: ExperimentConfig,
    device: torch.device,
    *,
    progress: bool,
    what: str,
) -> _Scan:
    logit_cut = logit_threshold(config.threshold)
    preds: list[np.ndarray] = []
    truths: list[np.ndarray] = []
    batches = range(0, n_images, config.batch_size)
    for start in tqdm(batches, desc=what, disable=not progress, unit="batch"):
        ids = range(start, min(start + config.batch_size, n_images))
        items = [dataset[i] for i in ids]
        images = torch.stack([item[0] for item in items]).to(device)
        with torch.no_grad():
            preds.append((model(images) > logit_cut).cpu().numpy())
        if columns is not None:
            labels = torch.stack([torch.as_tensor(item[1]) for item in items]).bool()
            padded = torch.cat([labels, torch.zeros(len(items), 1, dtype=torch.bool)], dim=1)
            truths.append(padded[:, columns].numpy())  # column -1 = the all-False pad
    num_labels = len(label_names_of(model))
    clean = np.concatenate(preds) if preds else np.zeros((0, num_labels), dtype=bool)
    truth = (
        None if columns is None else (np.concatenate(truths) if truths else np.zeros_like(clean))
    )
    return _Scan(clean, truth)


def _plan_target_sets(
    config: ExperimentConfig,
    names: tuple[str, ...],
    graph: LabelGraph,
    outside: tuple[str, ...],
    scan: _Scan,
) -> list[TargetSet]:
    on = scan.clean_pred if scan.ground_truth is None else scan.clean_pred & scan.ground_truth
    present = np.asarray(on.any(axis=0), dtype=bool)
    outside_set = set(outside)
    outside_ids = [i for i, n in enumerate(names) if n in outside_set]
    leaves = [int(i) for i in graph.leaves if names[int(i)] not in outside_set]
    drawn = draw_target_sets(
        config.target_sets,
        names,
        present=present,
        leaves=leaves,
        outside=outside_ids,
        seed=config.seed,
    )
    target_sets = []
    for ts_id, labels in enumerate(drawn):
        candidates = eligible_images(
            labels,
            scan.clean_pred,
            scan.ground_truth,
            graph=graph,
            require_consistent=config.images.require_consistent,
        )
        chosen = choose_images(
            candidates, config.images.per_target_set, seed=config.seed, ts_id=ts_id
        )
        target_sets.append(TargetSet(ts_id, labels, chosen, len(candidates)))
    return target_sets


def _prepare_transfer(
    config: ExperimentConfig,
    given: dict[str, nn.Module],
    names: tuple[str, ...],
    dataset: Dataset[Any],
    n_scan: int,
    columns: torch.Tensor | None,
    graph: LabelGraph,
    target_sets: list[TargetSet],
    *,
    device: torch.device,
    base: Path | None,
    progress: bool,
) -> tuple[dict[str, nn.Module], dict[str, np.ndarray], dict[str, list[tuple[int, ...]]]]:
    """The transfer models, their clean predictions, and per source model the images of each
    target set (chosen by that model's own clean predictions, like the main run's)."""
    nets: dict[str, nn.Module] = {}
    preds: dict[str, np.ndarray] = {}
    images: dict[str, list[tuple[int, ...]]] = {}
    if config.transfer is None:
        return nets, preds, images
    for spec in config.transfer.models:
        name = spec.display_name
        other = given.get(name) or build_model_from_spec(spec, base_dir=base)
        other = other.to(device).eval()
        if label_names_of(other) != names:
            raise ValueError(
                f"config key 'transfer.models': {name} has other labels than the attacked model; "
                f"transfer needs one label space"
            )
        nets[name] = other
        what = f"clean predictions ({name})"
        scan = _scan(other, dataset, n_scan, columns, config, device, progress=progress, what=what)
        preds[name] = scan.clean_pred
        images[name] = [
            choose_images(
                eligible_images(
                    ts.labels,
                    scan.clean_pred,
                    scan.ground_truth,
                    graph=graph,
                    require_consistent=config.images.require_consistent,
                ),
                config.images.per_target_set,
                seed=config.seed,
                ts_id=ts.ts_id,
            )  # fmt: skip
            for ts in target_sets
        ]
    return nets, preds, images


def _chunks(items: Sequence[int], size: int) -> Iterator[tuple[int, tuple[int, ...]]]:
    for start in range(0, len(items), size):
        yield start, tuple(items[start : start + size])


def _work_list(
    config: ExperimentConfig,
    target_sets: list[TargetSet],
    transfer_images: dict[str, list[tuple[int, ...]]],
) -> list[_Unit]:
    units: list[_Unit] = []
    for ts in target_sets:
        for start, ids in _chunks(ts.image_ids, config.batch_size):
            tag = f"{ts.ts_id}:{start}"
            for spec in config.attacks:
                for eps in config.eps:
                    units.append(
                        _Unit(
                            f"attack:{tag}:{spec.display_name}:{eps!r}",
                            "attack",
                            ts,
                            ids,
                            start,
                            spec,
                            eps,
                        )
                    )
            if config.gradient_correlation:
                units.append(_Unit(f"gradcorr:{tag}", "gradcorr", ts, ids, start))
    if config.transfer is not None:
        for source, per_ts in transfer_images.items():
            for ts, image_ids in zip(target_sets, per_ts, strict=True):
                for start, ids in _chunks(image_ids, config.batch_size):
                    units.append(
                        _Unit(
                            f"transfer:{source}:{ts.ts_id}:{start}",
                            "transfer",
                            ts,
                            ids,
                            start,
                            config.transfer.attack,
                            config.transfer.eps,
                            source,
                        )
                    )
    return units


def _np(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


# -- execution ---------------------------------------------------------------------------------
class _Context:
    """Everything a unit needs; ``execute`` returns the records to commit for one unit."""

    def __init__(
        self,
        config: ExperimentConfig,
        model: nn.Module,
        dataset: Dataset[Any],
        graph: LabelGraph,
        scan: _Scan,
        run_dir: Path,
        device: torch.device,
        target_sets: list[TargetSet],
        transfer_models: dict[str, nn.Module],
        transfer_preds: dict[str, np.ndarray],
    ) -> None:
        self.config = config
        self.model = model
        self.dataset = dataset
        self.graph = graph
        self.scan = scan
        self.run_dir = run_dir
        self.device = device
        self.num_labels = len(label_names_of(model))
        self.example_sets = {ts.ts_id for ts in target_sets if ts.image_ids}
        self.example_sets = set(sorted(self.example_sets)[: config.example_target_sets])
        self.transfer_models = transfer_models
        self.transfer_preds = transfer_preds
        self.logit_threshold = logit_threshold(config.threshold)

    def _load(self, image_ids: tuple[int, ...]) -> torch.Tensor:
        return torch.stack([self.dataset[i][0] for i in image_ids]).float().to(self.device)

    def _targets(self, unit: _Unit) -> torch.Tensor:
        targets = torch.zeros(
            len(unit.image_ids), self.num_labels, dtype=torch.bool, device=self.device
        )
        targets[:, list(unit.ts.labels)] = True
        return targets

    def _attack(self, spec: AttackSpec, model: nn.Module, eps: float) -> Any:
        return _configured_attack(self.config, spec, model, self.graph, eps)

    def execute(self, unit: _Unit) -> dict[str, list[tuple[Any, ...]]]:
        torch.manual_seed(self.config.seed)
        if unit.kind == "attack":
            return self._run_attack(unit)
        if unit.kind == "gradcorr":
            return self._run_gradcorr(unit)
        return self._run_transfer(unit)

    def _run_attack(self, unit: _Unit) -> dict[str, list[tuple[Any, ...]]]:
        from mlattack.metrics import evaluate

        assert unit.attack is not None
        images = self._load(unit.image_ids)
        attack = self._attack(unit.attack, self.model, unit.eps)
        started = time.perf_counter()
        result = attack(images, self._targets(unit))
        seconds = (time.perf_counter() - started) / len(unit.image_ids)
        # SSIM is NaN for images smaller than its window: the store records NaN, no need to warn
        # once per batch.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            metrics = evaluate(result, self.graph)
        delta = (result.adv - images).flatten(1)
        linf = _np(delta.abs().amax(dim=1))
        l2 = _np(delta.norm(dim=1))
        ssim = _np(metrics.ssim_per_image)
        attacked = _np(result.attacked)
        success = _np(metrics.success)
        semantic = _np(metrics.semantic_success)
        nt = _np(metrics.nt_flip_fraction)
        iterations = _np(result.iterations)
        grad_failed = _np(result.gradient_failed)
        clean, adv = _np(result.clean_pred), _np(result.adv_pred)
        targets, flip = _np(result.targets), _np(result.flip_set)
        name = unit.attack.display_name
        rows = [
            (
                unit.ts.ts_id, image_id, name, unit.eps, bool(attacked[b]), bool(success[b]),
                bool(semantic[b]), _nan_to_none(float(nt[b])), float(linf[b]), float(l2[b]),
                _nan_to_none(float(ssim[b])), int(iterations[b]), seconds, bool(grad_failed[b]),
                encode_labels(clean[b]), encode_labels(adv[b]), encode_labels(targets[b]), encode_labels(flip[b]),
            )
            for b, image_id in enumerate(unit.image_ids)
        ]  # fmt: skip
        examples = self._save_examples(unit, images, result.adv, clean, adv, flip)
        return {"results": rows, "examples": examples}

    def _save_examples(
        self,
        unit: _Unit,
        images: torch.Tensor,
        adv_images: torch.Tensor,
        clean: np.ndarray,
        adv: np.ndarray,
        flip: np.ndarray,
    ) -> list[tuple[Any, ...]]:
        if unit.ts.ts_id not in self.example_sets or unit.position >= self.config.examples:
            return []
        assert unit.attack is not None
        folder = self.run_dir / EXAMPLES_DIR
        folder.mkdir(exist_ok=True)
        rows = []
        keep = min(len(unit.image_ids), self.config.examples - unit.position)
        for b in range(keep):
            image_id = unit.image_ids[b]
            name = f"ts{unit.ts.ts_id}_img{image_id}_{_slug(unit.attack.display_name)}_eps{unit.eps:g}.npz"
            clean_image = _np(images[b]).astype(np.float32)
            delta = _np(adv_images[b]).astype(np.float32) - clean_image
            _atomic_savez(
                folder / name,
                clean=clean_image.astype(np.float16),
                delta=delta,
                clean_pred=clean[b],
                adv_pred=adv[b],
                targets=label_mask(unit.ts.labels, self.num_labels),
                flip_set=flip[b],
            )
            adv_image = np.clip(clean_image + delta, 0.0, 1.0).transpose(1, 2, 0)
            imsave(folder / name.replace(".npz", ".png"), adv_image)
            rows.append(
                (
                    unit.ts.ts_id,
                    image_id,
                    unit.attack.display_name,
                    unit.eps,
                    f"{EXAMPLES_DIR}/{name}",
                )
            )
        return rows

    def _run_gradcorr(self, unit: _Unit) -> dict[str, list[tuple[Any, ...]]]:
        from mlattack.metrics import gradient_correlation

        images = self._load(unit.image_ids)
        clean = torch.from_numpy(self.scan.clean_pred[list(unit.image_ids)]).to(self.device)
        targets = self._targets(unit)
        flip_set = torch.as_tensor(self.graph.consistent_target_set(clean, targets))
        # MLA-C's objective moves Ω, GMLA's moves Ψ ⊇ Ω: that is what Fig. 8 compares.
        cosines = gradient_correlation(
            self.model, images, flip_set, targets=targets, clean_pred=clean,
            threshold=self.config.threshold,
        )  # fmt: skip
        mla_c, gmla = _np(cosines["mla-c"]), _np(cosines["gmla"])
        rows = [
            (unit.ts.ts_id, image_id, _nan_to_none(float(mla_c[b])), _nan_to_none(float(gmla[b])))
            for b, image_id in enumerate(unit.image_ids)
        ]
        return {"gradcorr": rows}

    def _run_transfer(self, unit: _Unit) -> dict[str, list[tuple[Any, ...]]]:
        assert unit.attack is not None and unit.source is not None
        images = self._load(unit.image_ids)
        targets = self._targets(unit)
        result = self._attack(unit.attack, self.transfer_models[unit.source], unit.eps)(
            images, targets
        )
        fooled = _np(result.success & result.attacked)
        delta = result.adv - images
        # Scale each perturbation so that its L-inf norm is exactly eps (the paper's Fig. 7 setting).
        norm = delta.flatten(1).abs().amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        moved = (images + delta * (unit.eps / norm)).clamp(0.0, 1.0)
        columns = list(unit.ts.labels)
        rows = []
        for name, other in self.transfer_models.items():
            with torch.no_grad():
                adv_pred = other(moved) > self.logit_threshold
            clean = torch.from_numpy(self.transfer_preds[name][list(unit.image_ids)]).to(
                self.device
            )
            eligible = clean[:, columns].all(dim=1)
            success = eligible & ~adv_pred[:, columns].any(dim=1)
            consistent = torch.as_tensor(
                self.graph.is_consistent(adv_pred, around=targets), device=self.device
            )
            semantic = success & consistent
            for b, image_id in enumerate(unit.image_ids):
                rows.append(
                    (unit.source, name, unit.attack.display_name, unit.eps, unit.ts.ts_id, image_id,
                     bool(fooled[b]), bool(eligible[b]), bool(success[b]), bool(semantic[b]))
                )  # fmt: skip
        return {"transfer": rows}


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as handle:
        np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]
    partial.replace(path)


__all__ = ["run_experiment", "distributed_rank"]
