"""The experiment runner: config -> clean scan -> target sets -> work list -> units -> results store.

The work is a fixed, deterministic list of *units* (one attack at one ε over one batch of the images
chosen for one target set; plus gradient-correlation and transfer batches), planned by
:mod:`.planning` and executed by :mod:`.units`. Each unit is committed to the store atomically with
its marker, so an interrupted run resumes by skipping marked units and ends with exactly the rows an
uninterrupted run writes.

With ``W`` ranks (``RANK``/``WORLD_SIZE``, see :mod:`.distributed`) rank ``r`` writes
``results-rank{r}.sqlite`` and executes the units dealt to it by estimated cost (attack × steps ×
batch, costliest first to the least-loaded rank). Ranks joined by ``torchrun`` shard the clean scan
and check that they agree on the config and on the scan; every store records the scan's hash, and
the report refuses to merge stores whose hashes differ.

Start-up checks everything that can be checked cheaply (the device, the model, the dataset, the
graph, every attack's options) before the run folder is touched, so a failed first run leaves nothing
behind; ``config.json`` is written only once the store exists. Images that cannot be read are skipped
explicitly during the clean scan (never replaced by another image) and listed in the store's meta.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from mlattack import __version__
from mlattack.experiments.builders import (
    build_dataset_from_spec,
    build_model_from_spec,
    dataset_length,
    ground_truth_columns,
    label_names_of,
    resolve_graph,
)
from mlattack.experiments.config import ExperimentConfig
from mlattack.experiments.distributed import (
    Ranks,
    check_ranks_agree,
    distributed_rank,
    joined_ranks,
)
from mlattack.experiments.layout import (
    CONFIG_FILE,
    EXAMPLES_DIR,
    REPORT_DIR,
    config_partial_path,
    find_stores,
    lock_files,
    lock_path,
    rank_store_path,
    world_lock_path,
)
from mlattack.experiments.planning import (
    Unit,
    deal_units,
    plan_target_sets,
    plan_transfer,
    unit_cost,
    work_list,
)
from mlattack.experiments.scan import CleanScan, scan_clean
from mlattack.experiments.store import (
    ResultStore,
    StoreError,
    encode_labels,
    label_mask,
    lock_held_elsewhere,
    lock_run_dir,
    open_no_follow,
)
from mlattack.experiments.targets import TargetSet
from mlattack.experiments.units import UnitContext, configured_attack, execute

if TYPE_CHECKING:
    from mlattack.graph import LabelGraph

SCAN_HASH_KEY = "clean_scan_hash"  # the store meta key of the clean scan's hash
DROPPED_KEY = "dropped_unreadable"  # the store meta key: images the dataset dropped when built


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

    Raises:
        ValueError: among others, torchrun ranks that disagree on the config or the clean scan, or
            a run folder holding stores of another clean scan (naming both hashes).
    """
    if not isinstance(config, ExperimentConfig):
        base_dir = base_dir if base_dir is not None else Path(config).resolve().parent
        config = ExperimentConfig.from_yaml(config)
    base = Path(base_dir) if base_dir is not None else None
    run_dir = Path(out_dir)
    device = resolve_device(config.device)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"run directory {run_dir} is a file; give another '--out' directory")

    _check_attacks_available(config)
    torch.manual_seed(config.seed)
    if model is None:
        model = build_model_from_spec(config.model, base_dir=base)
    model = model.to(device).eval()
    if dataset is None:
        dataset = build_dataset_from_spec(config.dataset, model)
    names = label_names_of(model)
    graph, outside = resolve_graph(config.graph, model, dataset, base_dir=base)
    _check_attack_options(config, model, graph)
    columns = ground_truth_columns(dataset, names)

    with joined_ranks(device) as ranks:
        check_ranks_agree(ranks.gather(config.config_hash()), "the config (hash)")
        created = _make_run_dir(run_dir)
        with lock_run_dir(run_dir, ranks.rank, ranks.world):
            try:
                if force and ranks.rank == 0:
                    _clear_run_dir(run_dir)
                ranks.barrier()  # no rank looks at the folder before rank 0 has cleared it
                _refuse_other_configs(run_dir, config)
                _run_locked(
                    config, run_dir, ranks, model, dataset, names, graph, outside, columns,
                    device=device, base=base, progress=progress,
                    transfer_models=transfer_models or {},
                )  # fmt: skip
            except BaseException:
                if created:
                    _remove_failed_first_run(run_dir, ranks)
                raise
    return run_dir


def _make_run_dir(run_dir: Path) -> bool:
    """Create ``run_dir``; True when this process created it (of two racing, only one does)."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        run_dir.mkdir()
    except FileExistsError:
        if not run_dir.is_dir() or run_dir.is_symlink():
            raise ValueError(
                f"run directory {run_dir} is not a folder; give another '--out' directory"
            ) from None
        return False
    return True


def _remove_failed_first_run(run_dir: Path, ranks: Ranks) -> None:
    """A first run that failed leaves nothing, unless a store exists or another process (a rank
    of this run, or a run started since) holds a lock of the folder: never delete its files."""
    own = {lock_path(run_dir, ranks.rank).name, world_lock_path(run_dir, ranks.world).name}
    others = [p for p in lock_files(run_dir) if p.name not in own]
    if find_stores(run_dir) or any(lock_held_elsewhere(p) for p in others):
        return
    shutil.rmtree(run_dir, ignore_errors=True)


def _run_locked(
    config: ExperimentConfig,
    run_dir: Path,
    ranks: Ranks,
    model: nn.Module,
    dataset: Dataset[Any],
    names: tuple[str, ...],
    graph: LabelGraph,
    outside: tuple[str, ...],
    columns: torch.Tensor | None,
    *,
    device: torch.device,
    base: Path | None,
    progress: bool,
    transfer_models: dict[str, nn.Module],
) -> None:
    """The run proper, while this process holds its rank's lock of the run folder."""
    n_scan = dataset_length(dataset)
    if config.images.max_images is not None:
        n_scan = min(n_scan, config.images.max_images)
    stored_skips = _stored_skips(run_dir)
    scan = scan_clean(
        model, dataset, n_scan, columns, config, device, ranks,
        progress=progress, what="clean predictions", keep_skipped=stored_skips,
    )  # fmt: skip
    scan_hash = scan.digest()
    check_ranks_agree(ranks.gather(scan_hash), "the clean scan (hash)")
    _refuse_newly_unreadable(run_dir, scan.skipped, stored_skips)
    target_sets = plan_target_sets(config, names, graph, outside, scan)
    _refuse_nothing_to_attack(config, n_scan, scan, target_sets)
    transfer = plan_transfer(
        config, transfer_models, names, dataset, n_scan, columns, graph, target_sets, ranks,
        device=device, base=base, progress=progress, keep_skipped=stored_skips,
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
        "skipped_images": [[image_id, why] for image_id, why in scan.skipped.items()],
        DROPPED_KEY: _dropped_before_the_scan(dataset),
        SCAN_HASH_KEY: scan_hash,
        "world_size": ranks.world,
        "mlattack_version": __version__,
    }
    units = work_list(config, target_sets, transfer.images)
    with ResultStore.create_or_open(rank_store_path(run_dir, ranks.rank), meta) as store:
        _write_config_file(run_dir, config, ranks.rank)
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
        done = _done_units(run_dir, store, scan_hash)
        share = deal_units([unit_cost(unit, config) for unit in units], ranks.world)[ranks.rank]
        mine = [units[i] for i in share if units[i].unit_id not in done]
        context = UnitContext(
            config, model, dataset, graph, scan, run_dir, device, target_sets, transfer
        )
        _execute_all(mine, context, store, ranks, progress=progress)


def _dropped_before_the_scan(dataset: Dataset[Any]) -> int:
    """Unreadable images a dataset dropped when it was built (``validate: true``): they have no
    index, so the scan never sees them; the report counts them with the skipped ones."""
    met: frozenset[int] = getattr(dataset, "skipped", frozenset())
    return max(0, int(getattr(dataset, "num_skipped", 0) or 0) - len(met))


def _refuse_nothing_to_attack(
    config: ExperimentConfig, n_scan: int, scan: CleanScan, target_sets: list[TargetSet]
) -> None:
    """A run that would attack no image at all is an error saying why, not an empty report."""
    skipped = scan.skipped
    if n_scan == 0:
        raise ValueError("config key 'dataset': the dataset has no image to scan")
    if len(skipped) == n_scan:
        raise ValueError(
            f"config key 'dataset': every one of the {n_scan} scanned images is unreadable (e.g. "
            f"{next(iter(skipped.values()))}); nothing to attack"
        )
    readable = n_scan - len(skipped)
    if scan.n_nonfinite == readable:
        raise ValueError(
            f"config key 'model': the model's output on every one of the {readable} read images "
            "holds a NaN or an infinite logit (NaN/Inf weights, or a broken normalisation?); "
            "nothing to attack"
        )
    if not any(ts.image_ids for ts in target_sets):
        sizes = ", ".join(str(k) for k in config.target_sets.sizes)
        drawn = (
            f"{len(target_sets)} target set(s) of size {sizes}" if target_sets else "no target set"
        )
        raise ValueError(
            f"config key 'target_sets': {drawn} drawn, and none has an eligible image among the "
            f"{n_scan - len(skipped)} readable images (an eligible image's clean prediction"
            f"{' and ground truth' if scan.ground_truth is not None else ''} "
            "contain every label of the set); nothing to attack. Check the dataset's labels, "
            "'target_sets.sizes' and 'target_sets.labels'"
        )


def _stored_skips(run_dir: Path) -> dict[int, str]:
    """The images the stores already in ``run_dir`` list as skipped (id -> reason)."""
    skipped: dict[int, str] = {}
    for path in find_stores(run_dir):
        with ResultStore.open_readonly(path) as store:
            listed = store.meta().get("skipped_images", [])
        try:
            skipped.update((int(image_id), str(why)) for image_id, why in listed)
        except (TypeError, ValueError):
            raise StoreError(
                f"{path}: damaged metadata: 'skipped_images' is not a list of [image id, reason]"
            ) from None
    return skipped


def _refuse_newly_unreadable(
    run_dir: Path, skipped: dict[int, str], stored_skips: dict[int, str]
) -> None:
    """A resume whose scan cannot read an image the run read when it started would plan other
    target sets: refuse, naming the images, rather than report a mismatched clean scan."""
    if not find_stores(run_dir):
        return
    new = sorted(set(skipped) - set(stored_skips))
    if new:
        raise StoreError(
            f"{run_dir}: {len(new)} image(s) read when this run started cannot be read now (ids "
            f"{new[:10]}; e.g. {skipped[new[0]]}); make them readable again and resume, or start "
            "over with '--force'"
        )


def _done_units(run_dir: Path, store: ResultStore, scan_hash: str) -> set[str]:
    """Units any rank's store already holds; every store must come from the same clean scan."""
    done: set[str] = set()
    for path in find_stores(run_dir):
        if path == store.path:
            _check_scan_hash(path, store.meta(), scan_hash)
            done |= store.done_units()
            continue
        with ResultStore.open_readonly(path) as other:
            _check_scan_hash(path, other.meta(), scan_hash)
            done |= other.done_units()
    return done


def _check_scan_hash(path: Path, meta: dict[str, Any], scan_hash: str) -> None:
    theirs = meta.get(SCAN_HASH_KEY)
    if theirs is not None and theirs != scan_hash:
        raise StoreError(
            f"{path} was written from another clean scan (hash {theirs}; this run's is {scan_hash}): "
            "the model, the data or the device's arithmetic changed. Start fresh with '--force' or "
            "another '--out' directory."
        )


def _execute_all(
    units: list[Unit], context: UnitContext, store: ResultStore, ranks: Ranks, *, progress: bool
) -> None:
    name = context.config.name
    bar = tqdm(
        units,
        desc=f"{name} (rank {ranks.rank})" if ranks.world > 1 else name,
        disable=not progress,
        unit="batch",
    )
    for unit in bar:
        store.write_unit(unit.unit_id, **execute(unit, context))


# -- checks before the run -----------------------------------------------------------------------
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


def _check_attack_options(config: ExperimentConfig, model: nn.Module, graph: LabelGraph) -> None:
    """Build every configured attack once, so a bad option is named before the long clean scan."""
    specs = [(f"attacks[{i}]", spec, config.eps) for i, spec in enumerate(config.attacks)]
    if config.transfer is not None:
        specs.append(("transfer.attack", config.transfer.attack, [config.transfer.eps]))
    for key, spec, eps_values in specs:
        for eps in eps_values:
            try:
                configured_attack(config, spec, model, graph, eps)
            except (TypeError, ValueError) as exc:
                kind = ValueError if isinstance(exc, ValueError) else TypeError
                where = f"config key '{key}' ({spec.display_name}, eps={eps})"
                raise kind(f"{where}: {exc}") from exc


DEVICE_KEY = "config key 'device' (or --device)"


def resolve_device(name: str, *, what: str = DEVICE_KEY) -> torch.device:
    """The torch device a config's ``device`` names, checked to exist on this machine.

    ``auto`` is CUDA when present, else the CPU; ``cuda`` means this rank's GPU under torchrun
    (``LOCAL_RANK``). A device this machine lacks, or a device type other than ``cpu``, ``cuda`` and
    ``mps``, is a ``ValueError`` naming ``what`` (the key or option).
    """
    if not isinstance(name, str):
        raise TypeError(f"{what}: expected a device name, got {type(name).__name__}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        name = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(
            f"{what}: unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"{what}: {name!r} asked for, but CUDA is not available on this machine; use "
                "'cpu' or 'auto'"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"{what}: {name!r} asked for, but this machine has {count} CUDA device(s)"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            f"{what}: {name!r} asked for, but Apple's MPS is not available on this machine; use "
            "'cpu' or 'auto'"
        )
    return device


def _clear_run_dir(run_dir: Path) -> None:
    """``--force``: delete the stores, examples, report and config file of earlier runs."""
    for store in find_stores(run_dir):
        for path in (store, *store.parent.glob(store.name + "-*")):  # with its -wal and -shm
            path.unlink(missing_ok=True)
    for name in (EXAMPLES_DIR, REPORT_DIR):
        shutil.rmtree(run_dir / name, ignore_errors=True)
    (run_dir / CONFIG_FILE).unlink(missing_ok=True)


def _refuse_other_configs(run_dir: Path, config: ExperimentConfig) -> None:
    """Under the run folder's lock: refuse a folder holding stores of another config."""
    for path in find_stores(run_dir):
        with ResultStore.open_readonly(path) as store:
            theirs = store.meta().get("config_hash")
        if theirs != config.config_hash():
            raise StoreError(
                f"{run_dir} holds results of a different config ({path.name}, hash {theirs}); refusing "
                f"to mix them. Start fresh with '--force' (deletes the old results), another '--out' "
                f"directory, or delete {run_dir} yourself."
            )


def _write_config_file(run_dir: Path, config: ExperimentConfig, rank: int) -> None:
    """``config.json`` (the canonical config) beside a store that now exists; written atomically.

    Every rank writes the same text (the ranks agree on the config), each through its own
    temporary file, so that two ranks never rename one file from under each other.
    """
    path = run_dir / CONFIG_FILE
    partial = config_partial_path(run_dir, rank)
    partial.unlink(missing_ok=True)  # a leftover, or a link planted there: removed, not followed
    handle = open_no_follow(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        stream.write(config.canonical_json() + "\n")
    partial.replace(path)


__all__ = ["CONFIG_FILE", "SCAN_HASH_KEY", "distributed_rank", "resolve_device", "run_experiment"]
