"""The paper's figures (matplotlib, object API only: no global pyplot state, no display needed).

Each ``figure_*`` function writes one PNG and returns its path, or returns ``None`` when the data it
needs is absent (the report then says so).
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from mlattack.experiments.aggregate import (
    METRIC_TITLES,
    METRICS,
    Aggregates,
    Run,
    read_example,
    transfer_matrix,
)

COSINE_BINS = (-1.0, 0.0, 0.25, 0.5, 0.75, 0.85, 1.0)
_DPI = 110
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _literal_text(draw: Callable[_P, _R]) -> Callable[_P, _R]:
    """Draw all text literally: a label name such as ``a$b`` must not be parsed as mathtext."""

    @functools.wraps(draw)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with matplotlib.rc_context({"text.parse_math": False}):
            return draw(*args, **kwargs)

    return wrapper


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=_DPI, bbox_inches="tight")
    return path


def format_eps(eps: float) -> str:
    """ε as a fraction of 255 when it is a whole grey level (``4/255``), or a half or quarter of one
    below 4 levels (``0.5/255``, ``1.25/255``: the small budgets papers write that way), else to
    four significant digits (``0.1``, not ``25.5/255``)."""
    steps = eps * 255
    quarters = round(steps * 4)
    whole = abs(steps - round(steps)) < 1e-6 and round(steps) >= 1
    small = 1 <= quarters < 16 and abs(steps * 4 - quarters) < 4e-6
    if eps > 0 and (whole or small):
        return f"{quarters / 4:g}/255"
    return f"{eps:.4g}"


def _series_label(model: str, attack: str, n_models: int) -> str:
    return attack if n_models == 1 else f"{model} / {attack}"


@_literal_text
def figure_eps(agg: Aggregates, path: Path) -> Path | None:
    """Fig. 5: FR_N and FR_S against ε, one column per |Ω|."""
    rows = agg.summary
    if len({r["eps"] for r in rows}) < 2:
        return None
    sizes = sorted({r["size"] for r in rows})
    n_models = len({r["model"] for r in rows})
    fig = Figure(figsize=(4.0 * len(sizes), 6.0), layout="constrained")
    axes = fig.subplots(2, len(sizes), squeeze=False)
    for col, size in enumerate(sizes):
        for row_index, metric in enumerate(("fr_naive", "fr_semantic")):
            ax = axes[row_index][col]
            series: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
            for r in rows:
                if r["size"] == size:
                    series[(r["model"], r["attack"])].append((r["eps"], r[f"{metric}_mean"]))
            for (model, attack), points in sorted(series.items()):
                points.sort()
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                        label=_series_label(model, attack, n_models))  # fmt: skip
            ticks = sorted({r["eps"] for r in rows})
            ax.set_xticks(ticks, [format_eps(e) for e in ticks])
            ax.set_xlabel("ε")
            ax.set_ylabel(METRIC_TITLES[metric])
            ax.set_ylim(-0.02, 1.02)
            if row_index == 0:
                ax.set_title(f"|Ω| = {size}")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return _save(fig, path)


BOOTSTRAP_RESAMPLES = 1000
INTERVAL = 0.95


def size_series(agg: Aggregates) -> list[dict[str, Any]]:
    """Fig. 6's points: per model, attack, metric and |Ω| at the run's first ε, the mean over target
    sets with a 95 % percentile-bootstrap interval of that mean (resampling the target sets; it
    stays within the range of the values, so within [0, 1] for the rates) and ``n`` sets."""
    first_eps = {run.model: run.eps_list[0] for run in agg.runs}
    values: dict[tuple[str, str, str, int], list[float]] = defaultdict(list)
    for row in agg.per_set:
        if row["eps"] == first_eps.get(row["model"]):
            for metric in METRICS:
                if not math.isnan(row[metric]):
                    values[(row["model"], row["attack"], metric, row["size"])].append(row[metric])
    rng = np.random.default_rng(0)
    points = []
    for (model, attack, metric, size), found in sorted(values.items()):
        sample = np.asarray(found, dtype=np.float64)
        resampled = sample[rng.integers(len(sample), size=(BOOTSTRAP_RESAMPLES, len(sample)))]
        low, high = np.quantile(resampled.mean(axis=1), [(1 - INTERVAL) / 2, (1 + INTERVAL) / 2])
        mean = float(sample.mean())
        points.append({"model": model, "attack": attack, "metric": metric, "size": size,
                       "mean": mean, "low": min(float(low), mean), "high": max(float(high), mean),
                       "n": len(sample)})  # fmt: skip
    return points


@_literal_text
def figure_sizes(agg: Aggregates, path: Path) -> Path | None:
    """Fig. 6: FR_N, FR_S, NT_R, SSIM against |Ω| at each run's first ε (:func:`size_series`):
    series dodged sideways so that equal values stay visible, ``n`` written at each point."""
    points = size_series(agg)
    sizes = sorted({p["size"] for p in points})
    if len(sizes) < 2:
        return None
    n_models = len({p["model"] for p in points})
    keys = sorted({(p["model"], p["attack"]) for p in points})
    fig = Figure(figsize=(14.0, 3.6), layout="constrained")
    axes = fig.subplots(1, len(METRICS))
    for ax, metric in zip(axes, METRICS, strict=True):
        for index, key in enumerate(keys):
            mine = sorted(
                (p for p in points if (p["model"], p["attack"]) == key and p["metric"] == metric),
                key=lambda p: p["size"],
            )
            if not mine:
                continue
            shift = (index - (len(keys) - 1) / 2) * 0.12
            xs = [p["size"] + shift for p in mine]
            means = np.array([p["mean"] for p in mine])
            below = means - np.array([p["low"] for p in mine])
            above = np.array([p["high"] for p in mine]) - means
            ax.errorbar(xs, means, yerr=[below, above], marker="o", capsize=3,
                        label=_series_label(*key, n_models))  # fmt: skip
            for x, p in zip(xs, mine, strict=True):
                ax.annotate(f"{p['n']}", (x, p["high"]), textcoords="offset points",
                            xytext=(0, 3), ha="center", fontsize=6, color="dimgray")  # fmt: skip
        ax.set_xlabel("|Ω|")
        ax.set_xticks(sizes)
        ax.set_title(METRIC_TITLES[metric])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        "mean over target sets, 95 % bootstrap interval; small numbers: target sets averaged (n)",
        fontsize=9,
    )
    return _save(fig, path)


@_literal_text
def figure_transfer(agg: Aggregates, path: Path) -> Path | None:
    """Fig. 7: transfer rate heat maps (naive and semantic), rows = source, columns = target."""
    if not agg.transfer:
        return None
    fig = Figure(figsize=(10.0, 4.2), layout="constrained")
    made = sorted({(str(r["attack"]), float(r["eps"])) for r in agg.transfer})
    fig.suptitle(
        "perturbations made by " + "; ".join(f"{a} at ε = {format_eps(e)}" for a, e in made),
        fontsize=10,
    )
    axes = fig.subplots(1, 2)
    for ax, semantic in zip(axes, (False, True), strict=True):
        sources, targets, matrix = transfer_matrix(agg.transfer, semantic=semantic)
        image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_xticks(range(len(targets)), targets, rotation=30, ha="right")
        ax.set_yticks(range(len(sources)), sources)
        ax.set_xlabel("target model")
        ax.set_ylabel("source model")
        ax.set_title("semantic (FR_S)" if semantic else "naive (FR_N)")
        for i in range(len(sources)):
            for j in range(len(targets)):
                text = "n/a" if math.isnan(matrix[i, j]) else f"{matrix[i, j]:.2f}"
                ax.text(j, i, text, ha="center", va="center", color="white", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046)
    return _save(fig, path)


@_literal_text
def figure_gradcorr(agg: Aggregates, path: Path) -> Path | None:
    """Fig. 8: share of images per cos(g_t, g_nt) bin, MLA-C vs GMLA objective, per model and |Ω|."""
    if not agg.gradcorr:
        return None
    groups: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(
        lambda: {"mla-c": [], "gmla": []}
    )
    for row in agg.gradcorr:
        for objective in ("mla-c", "gmla"):
            if row[objective] is not None:
                groups[(row["model"], row["size"])][objective].append(row[objective])
    labels, shares = [], []
    for (model, size), values in sorted(groups.items()):
        for objective, title in (("mla-c", "MLA-C"), ("gmla", "GMLA")):
            counts, _ = np.histogram(np.clip(values[objective], -1.0, 1.0), bins=COSINE_BINS)
            shares.append(counts / max(counts.sum(), 1))
            prefix = f"{model}\n" if len(agg.runs) > 1 else ""
            labels.append(f"{prefix}|Ω|={size}\n{title}")
    fig = Figure(figsize=(max(5.0, 1.1 * len(labels)), 4.2), layout="constrained")
    ax = fig.subplots()
    bottom = np.zeros(len(labels))
    stacked = np.array(shares)
    for b in range(len(COSINE_BINS) - 1):
        closing = "]" if b == len(COSINE_BINS) - 2 else ")"  # numpy's last bin is closed
        ax.bar(range(len(labels)), stacked[:, b], bottom=bottom,
               label=f"[{COSINE_BINS[b]:g}, {COSINE_BINS[b + 1]:g}{closing}")  # fmt: skip
        bottom += stacked[:, b]
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("share of images")
    ax.set_title("cos(g_t, g_nt) at the clean image: g_t on the labels to flip, g_nt on the others")
    ax.legend(title="cos(g_t, g_nt) bin", fontsize=8, bbox_to_anchor=(1.02, 1.0), loc="upper left")
    return _save(fig, path)


# What the colours and marks of Fig. 9 mean (the colours _label_lines uses).
_QUALITATIVE_LEGEND = (
    ("T  a label of Ω (target)", "tab:blue"),
    ("Ψ  the attack's flip set beyond Ω", "teal"),
    ("!  left inconsistent by the attack", "red"),
    ("~  inconsistent already before the attack", "purple"),
    ("another label that flipped", "darkorange"),
    ("a label that kept its state", "black"),
    ("[root]  labels grouped by graph root", "dimgray"),
    ("on→off: clean → adversarial prediction", "none"),
)


def _group_of(graph: Any, index: int) -> str:
    roots = [int(r) for r in graph.ancestors(index) if len(graph.parents(int(r))) == 0]
    if not roots:
        return str(graph.names[index])
    return str(graph.names[min(roots)])


def _label_lines(
    run: Run, graph: Any, arrays: dict[str, np.ndarray], limit: int = 16
) -> list[tuple[str, str]]:
    """(text, colour) lines: labels on before or after, grouped by their root in the graph."""
    clean, adv = arrays["clean_pred"].astype(bool), arrays["adv_pred"].astype(bool)
    targets = arrays["targets"].astype(bool)
    # What the attack meant to flip (GMLA's Ψ); a flip there is no collateral damage.
    flip_set = arrays.get("flip_set", targets).astype(bool)
    violations = np.asarray(graph.violations(adv), dtype=bool)
    # a label inconsistent in the clean prediction as well was not broken by the attack
    before = np.asarray(graph.violations(clean), dtype=bool)
    broken = violations & ~before
    kept_broken = violations & before
    names = run.label_names
    shown = sorted(
        np.flatnonzero(clean | adv | targets).tolist(),
        key=lambda i: (_group_of(graph, int(i)), graph.depth(int(i)), names[i]),
    )
    lines: list[tuple[str, str]] = []
    last_group = None
    for i in shown:
        group = _group_of(graph, int(i))
        if group != last_group:
            lines.append((f"[{group}]", "dimgray"))
            last_group = group
        role = "T " if targets[i] else "Ψ " if flip_set[i] else ""
        marks = role + ("! " if broken[i] else "~ " if kept_broken[i] else "")
        state = f"{'on' if clean[i] else 'off'}→{'on' if adv[i] else 'off'}"
        colour = (
            "red"
            if broken[i]
            else "purple"
            if kept_broken[i]
            else "tab:blue"
            if targets[i]
            else "teal"
            if flip_set[i]
            else "darkorange"
            if clean[i] != adv[i]
            else "black"
        )
        lines.append((f"  {marks}{names[i]}: {state}", colour))
    if len(lines) > limit:
        lines = lines[: limit - 1] + [(f"  ... {len(lines) - limit + 1} more", "dimgray")]
    return lines


def _example_groups(examples: list[dict[str, Any]], limit: int) -> list[list[dict[str, Any]]]:
    grouped: dict[tuple[int, int, float], list[dict[str, Any]]] = defaultdict(list)
    for e in examples:
        grouped[(e["ts_id"], e["image_id"], e["eps"])].append(e)
    first_eps = min((e["eps"] for e in examples), default=0.0)
    keys = [k for k in grouped if k[2] == first_eps][:limit]
    return [grouped[k] for k in keys]


@_literal_text
def figure_qualitative(
    run: Run, graph: Any, examples: list[dict[str, Any]], path: Path, *, limit: int = 4
) -> Path | None:
    """Fig. 9: image + clean→adversarial labels per attack, grouped by graph root.

    A legend under the panels explains the marks (``T`` = a label of Ω, ``Ψ`` = a label of the
    attack's flip set beyond Ω, ``!`` = inconsistent in the adversarial prediction) and the
    colours, so that what GMLA flips on purpose does not read as collateral damage.
    """
    groups = _example_groups(examples, limit)
    if not groups:
        return None
    n_cols = 1 + max(len(g) for g in groups)
    fig = Figure(figsize=(3.9 * n_cols, 4.2 * len(groups) + 0.8), layout="constrained")
    axes = fig.subplots(len(groups), n_cols, squeeze=False)
    for row, group in enumerate(groups):
        for ax in axes[row]:
            ax.axis("off")
        first = read_example(run, group[0])
        axes[row][0].imshow(first["clean"].astype(np.float32).transpose(1, 2, 0).clip(0, 1))
        omega = ", ".join(run.label_names[i] for i in np.flatnonzero(first["targets"]))
        axes[row][0].set_title(
            f"image {group[0]['image_id']}, ε = {format_eps(group[0]['eps'])}\nΩ = {omega}",
            fontsize=11,
        )
        for col, example in enumerate(group, start=1):
            arrays = read_example(run, example)
            ax = axes[row][col]
            outcome = (
                "semantic success"
                if example["semantic_success"]
                else "success"
                if example["success"]
                else "failed"
            )
            ax.set_title(f"{example['attack']} ({outcome})", fontsize=11)
            for k, (text, colour) in enumerate(_label_lines(run, graph, arrays)):
                ax.text(0.0, 1.0 - 0.0625 * k, text, color=colour, fontsize=10, family="monospace",
                        transform=ax.transAxes, va="top")  # fmt: skip
    handles = [Patch(color=colour, label=text) for text, colour in _QUALITATIVE_LEGEND]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=10, frameon=False)
    return _save(fig, path)


@_literal_text
def figure_perturbations(
    run: Run, examples: list[dict[str, Any]], path: Path, *, limit: int = 4
) -> Path | None:
    """Fig. 10: perturbations (scaled to ±ε), their cosine with GMLA's perturbation, and SSIM."""
    groups = _example_groups(examples, limit)
    if not groups:
        return None
    kinds = run.attack_kinds
    n_cols = max(len(g) for g in groups)
    fig = Figure(figsize=(2.6 * n_cols, 2.9 * len(groups)), layout="constrained")
    axes = fig.subplots(len(groups), n_cols, squeeze=False)
    for row, group in enumerate(groups):
        deltas = {e["attack"]: read_example(run, e)["delta"].astype(np.float64) for e in group}
        reference = next(
            (deltas[e["attack"]] for e in group if kinds.get(e["attack"]) == "gmla"), None
        )
        for ax in axes[row]:
            ax.axis("off")
        for col, example in enumerate(group):
            delta = deltas[example["attack"]]
            scale = max(float(example["eps"]), 1e-12)
            axes[row][col].imshow((delta / (2 * scale) + 0.5).clip(0, 1).transpose(1, 2, 0))
            cosine = "n/a"
            if reference is not None:
                norm = np.linalg.norm(delta) * np.linalg.norm(reference)
                cosine = f"{float(np.vdot(delta, reference) / norm):.2f}" if norm > 0 else "n/a"
            ssim = "n/a" if example["ssim"] is None else f"{example['ssim']:.3f}"
            where = f"image {example['image_id']}, set {example['ts_id']}"
            axes[row][col].set_title(
                f"{example['attack']} ({where})\ncos·GMLA={cosine} SSIM={ssim}", fontsize=8
            )
    return _save(fig, path)
