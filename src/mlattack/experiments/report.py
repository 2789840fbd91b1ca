"""``build_report``: aggregates -> CSV + JSON + PNG figures + one self-contained HTML page.

The report is written into a hidden temporary folder beside its target and swapped in when complete,
so an interrupted report never leaves new CSVs next to an old page. CSV cells that a spreadsheet
would run as a formula (text starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return)
are written with a leading ``'``, as are cells that already start with one: strip one leading ``'``
from a text cell to recover the stored value (:func:`unescape_cell`).
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlattack.experiments.aggregate import (
    METRIC_TITLES,
    METRICS,
    Aggregates,
    aggregate,
    load_examples,
    skipped_images,
    transfer_matrix,
)
from mlattack.experiments.figures import (
    figure_eps,
    figure_gradcorr,
    figure_perturbations,
    figure_qualitative,
    figure_sizes,
    figure_transfer,
    format_eps,
)
from mlattack.experiments.store import fault_point

REPORT_DIR = "report"
REPORT_FILES = ("report.html", "report.json")  # a folder holding one of these is a report folder
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")

DENOMINATORS = {
    "table1": "FR_N and FR_S: over the attacked images of each target set (images whose clean "
    "prediction and ground truth contain Ω); NT_R and SSIM: over the images where every label of Ω "
    "flipped. Then mean ± std (population) across target sets; n_sets counts the target sets averaged. "
    "Forward and backward passes: rows through the model in the attack's loop and stages per "
    "attacked image, over all images of the cell (the clean and the final forward pass, one each, "
    "not included).",
    "table2": "NT_R per target set over its successful images (Ψ̄ = labels outside the consistent "
    "target set of Ω on the clean prediction), then mean ± std across target sets.",
    "fig5": "FR_N / FR_S over the attacked images of each target set, averaged across target sets.",
    "fig6": "As Table 1, at each run's first ε; error bars = std across target sets.",
    "fig7": "Share of the images the source attack fooled (all of Ω flipped on the source model) "
    "whose perturbation, scaled to L∞ = ε, also flips all of Ω on the target model (FR_S: and leaves "
    "the target's prediction consistent around Ω); images where the target model did not predict Ω "
    "count as not transferred. Mean across target sets with at least one fooled image.",
    "fig8": "All images attacked for each target set size, cosine at the clean image.",
    "fig9": "Saved example images (first target sets, first images, first ε). T marks a label of "
    "Ω, Ψ a label of the attack's flip set beyond Ω (GMLA's consistent target set), ! a label "
    "inconsistent after the attack; orange labels flipped without being in the flip set.",
    "fig10": "Same examples: perturbation shown as δ/(2ε)+0.5; cos·GMLA = cosine between the "
    "flattened perturbation and GMLA's on the same image; SSIM between clean and adversarial image.",
}


def build_report(
    run_dir: str | Path, *more_runs: str | Path, out_dir: str | Path | None = None, note: str = ""
) -> Path:
    """Write the report of one run (or several, e.g. one per model) and return the HTML path.

    ``note`` is a line shown under the page's title (e.g. where a related report is).

    Files go to ``out_dir`` (default ``RUN_DIR/report``): ``table1.csv``, ``table2.csv``,
    ``per_target_set.csv``, ``transfer.csv``, ``report.json``, ``fig*.png`` and ``report.html``.
    """
    run_dirs = [Path(run_dir), *(Path(d) for d in more_runs)]
    agg = aggregate(run_dirs)
    final = Path(out_dir) if out_dir is not None else run_dirs[0] / REPORT_DIR
    if out_dir is not None:  # RUN_DIR/report is always mlattack's own
        _check_replaceable(final)
    target = final.with_name(f".{final.name}.partial-{os.getpid()}")
    _remove_leftovers(final)
    target.mkdir(parents=True)
    try:
        _write_report(agg, target, note)
        fault_point("report")
        _swap_in(target, final)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return final / "report.html"


def _check_replaceable(final: Path) -> None:
    """Only an empty folder or an earlier report may be replaced by a report."""
    if final.exists() and not final.is_dir():
        raise ValueError(f"report folder {final} is a file; give another '--out'")
    if (
        final.is_dir()
        and any(final.iterdir())
        and not any((final / f).is_file() for f in REPORT_FILES)
    ):
        raise ValueError(
            f"{final} exists and is not an mlattack report folder; refusing to replace it "
            "(give another '--out')"
        )


def _remove_leftovers(final: Path) -> None:
    """Folders left by interrupted reports into ``final`` (temporary or swapped out)."""
    if final.parent.is_dir():
        for prefix in (f".{final.name}.partial-", f".{final.name}.old-"):
            for stale in final.parent.glob(prefix + "*"):
                shutil.rmtree(stale, ignore_errors=True)


def _swap_in(new: Path, final: Path) -> None:
    """Replace ``final`` by the complete folder ``new``: a reader sees the old or the new report."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(old)
        new.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(final)


def _write_report(agg: Aggregates, target: Path, note: str = "") -> None:
    """Every file of the report into the (new, empty) folder ``target``."""
    _write_csv(target / "table1.csv", agg.summary)
    _write_csv(target / "per_target_set.csv", agg.per_set)
    _write_csv(target / "table2.csv", _table2_rows(agg))
    _write_csv(
        target / "empty_target_sets.csv",
        [{**e, "labels": " + ".join(e["labels"])} for e in agg.empty_sets],
    )
    if agg.transfer:
        _write_csv(target / "transfer.csv", agg.transfer)

    figures: list[tuple[str, str, Path | None, str]] = [
        ("fig5", "Fig. 5 — FR_N / FR_S vs ε", figure_eps(agg, target / "fig5_eps.png"), "needs two or more ε values"),
        ("fig6", "Fig. 6 — metrics vs |Ω|", figure_sizes(agg, target / "fig6_sizes.png"), "needs two or more target-set sizes"),
        ("fig7", "Fig. 7 — transferability", figure_transfer(agg, target / "fig7_transfer.png"), "needs a 'transfer' section in the config"),
        ("fig8", "Fig. 8 — cos(g_t, g_nt): MLA-C vs GMLA objective", figure_gradcorr(agg, target / "fig8_gradcorr.png"), "needs 'gradient_correlation: true' in the config"),
    ]  # fmt: skip
    for index, run in enumerate(agg.runs):
        examples = load_examples(run)
        suffix = "" if len(agg.runs) == 1 else f"_{index}"
        graph = _graph_of(run.meta)
        fig9 = (
            figure_qualitative(run, graph, examples, target / f"fig9_qualitative{suffix}.png")
            if graph
            else None
        )
        fig10 = figure_perturbations(run, examples, target / f"fig10_perturbations{suffix}.png")
        title_suffix = "" if len(agg.runs) == 1 else f" ({run.model})"
        missing = "needs saved examples ('examples' > 0 and at least one attacked image)"
        figures.append(("fig9", f"Fig. 9 — qualitative examples{title_suffix}", fig9, missing))
        figures.append(("fig10", f"Fig. 10 — perturbations{title_suffix}", fig10, missing))

    (target / "report.json").write_text(
        json.dumps(_json_payload(agg, figures), indent=2, default=_json_default) + "\n",
        encoding="utf-8",
    )
    (target / "report.html").write_text(_html(agg, figures, note), encoding="utf-8")


def _graph_of(meta: dict[str, Any]) -> Any:
    from mlattack.graph import LabelGraph

    return LabelGraph.from_json(meta["graph"]) if meta.get("graph") else None


def _table2_rows(agg: Aggregates) -> list[dict[str, Any]]:
    """NT_R (mean ± std) per model × attack × ε, one column per |Ω|."""
    sizes = sorted({r["size"] for r in agg.summary})
    rows: dict[tuple[str, str, float], dict[str, Any]] = {}
    for r in agg.summary:
        row = rows.setdefault(
            (r["model"], r["attack"], r["eps"]),
            {"model": r["model"], "attack": r["attack"], "eps": r["eps"]},
        )
        row[f"nt_rate_k{r['size']}"] = _pm(r["nt_rate_mean"], r["nt_rate_std"])
    for row in rows.values():
        for k in sizes:
            row.setdefault(f"nt_rate_k{k}", "")
    return list(rows.values())


def _pm(mean: float, std: float) -> str:
    return "n/a" if math.isnan(mean) else f"{mean:.3f} ± {std:.3f}"


def _passes(mean: float) -> str:
    """Passes through the model per image ("n/a" for results stored without the counts)."""
    return "n/a" if math.isnan(mean) else f"{mean:.1f}"


def escape_cell(value: Any) -> Any:
    """A CSV cell that no spreadsheet runs as a formula; see the module docstring."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def unescape_cell(text: str) -> str:
    """The stored text of a CSV cell written by this module (inverse of :func:`escape_cell`)."""
    return text[1:] if text.startswith("'") else text


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        if not rows:
            handle.write("")
            return
        writer = csv.DictWriter(handle, fieldnames=[escape_cell(k) for k in rows[0]])
        writer.writeheader()
        writer.writerows({escape_cell(k): escape_cell(v) for k, v in row.items()} for row in rows)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    return float(value)


def _json_payload(
    agg: Aggregates, figures: list[tuple[str, str, Path | None, str]]
) -> dict[str, Any]:
    def clean(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in rows
        ]

    return {
        "runs": [
            {
                "run_dir": str(r.run_dir),
                "model": r.model,
                "config_hash": r.meta.get("config_hash"),
                "config": r.meta.get("config"),
            }
            for r in agg.runs
        ],  # fmt: skip
        "n_rows": agg.n_rows,
        "skipped_images": {r.model: skipped_images(r) for r in agg.runs},
        "denominators": DENOMINATORS,
        "table1": clean(agg.summary),
        "per_target_set": clean(agg.per_set),
        "empty_target_sets": agg.empty_sets,
        "transfer": agg.transfer,
        "figures": {title: (path.name if path else None) for _, title, path, _ in figures},
    }


# -- HTML --------------------------------------------------------------------------------------
_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.9em}
th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:right}
th{background:#f2f2f2} td.l,th.l{text-align:left}
.note{color:#555;font-size:0.9em} .missing{color:#a33}
img{max-width:100%;border:1px solid #ddd}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(headers: list[str], rows: list[list[Any]], left: int = 0) -> str:
    head = "".join(
        f'<th class="l">{_e(h)}</th>' if i < left else f"<th>{_e(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="l">{_e(v)}</td>' if i < left else f"<td>{_e(v)}</td>"
            for i, v in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _skipped_html(agg: Aggregates) -> str:
    """Images the clean scan could not read: skipped (never replaced by another), listed here."""
    rows = [[r.model, image_id, why] for r in agg.runs for image_id, why in skipped_images(r)]
    if not rows:
        return "<p class='note'>Unreadable images skipped: 0.</p>"
    return (
        f"<p class='missing'>Unreadable images skipped: {len(rows)} (never attacked, never "
        "replaced by another image).</p>" + _table(["model", "image id", "reason"], rows, left=3)
    )


def _html(agg: Aggregates, figures: list[tuple[str, str, Path | None, str]], note: str = "") -> str:
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>mlattack report</title>",
        f"<style>{_STYLE}</style></head><body><h1>mlattack report</h1>",
    ]
    if note:
        parts.append(f"<p class='note'>{_e(note)}</p>")
    run_rows = [
        [r.model, r.meta.get("config", {}).get("name", ""), r.meta.get("config", {}).get("dataset", {}).get("name", ""),
         r.meta.get("config_hash", ""), len(r.target_sets), str(r.run_dir)]
        for r in agg.runs
    ]  # fmt: skip
    parts.append(
        _table(
            ["model", "experiment", "dataset", "config hash", "target sets", "run dir"],
            run_rows,
            left=6,
        )
    )
    parts.append(f"<p class='note'>{agg.n_rows} stored result rows.</p>")
    parts.append(_skipped_html(agg))

    parts.append("<h2>Table 1 — FR_N, FR_S, NT_R, SSIM per model × attack × |Ω|</h2>")
    parts.append(f"<p class='note'>Denominators: {_e(DENOMINATORS['table1'])}</p>")
    rows = [
        [
            r["model"],
            r["attack"],
            format_eps(r["eps"]),
            r["size"],
            r["n_sets"],
            r["n_empty_sets"],
            r["n_images"],
        ]
        + [_pm(r[f"{m}_mean"], r[f"{m}_std"]) for m in METRICS]
        + [_passes(r["forward_passes_per_image"]), _passes(r["backward_passes_per_image"])]
        for r in agg.summary
    ]
    parts.append(
        _table(
            [
                "model",
                "attack",
                "ε",
                "|Ω|",
                "sets",
                "empty sets",
                "images",
                *(METRIC_TITLES[m] for m in METRICS),
                "forward passes / image",
                "backward passes / image",
            ],
            rows,
            left=2,
        )
    )

    parts.append("<h2>Table 2 — NT_R vs |Ω|</h2>")
    parts.append(f"<p class='note'>Denominators: {_e(DENOMINATORS['table2'])}</p>")
    table2 = _table2_rows(agg)
    if table2:
        keys = list(table2[0])
        titles = [
            k.replace("nt_rate_k", "NT_R at |Ω|=") if k.startswith("nt_rate_k") else k for k in keys
        ]
        cells = [[format_eps(row[k]) if k == "eps" else row[k] for k in keys] for row in table2]
        parts.append(_table(titles, cells, left=2))

    if agg.transfer:
        sources, targets, matrix = transfer_matrix(agg.transfer)
        parts.append("<h2>Transfer rates (naive), rows = source, columns = target</h2>")
        parts.append(
            _table(
                ["source", *targets],
                [
                    [s, *("n/a" if math.isnan(v) else f"{v:.3f}" for v in matrix[i])]
                    for i, s in enumerate(sources)
                ],
                left=1,
            )
        )

    for key, title, path, missing in figures:
        parts.append(f"<h2>{_e(title)}</h2>")
        if path is None or not path.is_file():
            parts.append(f"<p class='missing'>Not drawn: {_e(missing)}.</p>")
            continue
        parts.append(f"<p class='note'>Denominator: {_e(DENOMINATORS[key])}</p>")
        encoded = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(f"<img alt='{_e(title)}' src='data:image/png;base64,{encoded}'>")

    parts.append("<h2>Target sets with no eligible image</h2>")
    if agg.empty_sets:
        parts.append(
            _table(
                ["model", "id", "|Ω|", "labels", "eligible"],
                [
                    [e["model"], e["ts_id"], e["size"], " + ".join(e["labels"]), e["n_eligible"]]
                    for e in agg.empty_sets
                ],
                left=1,
            )
        )
    else:
        parts.append("<p class='note'>None.</p>")

    parts.append("<details><summary>Per target set</summary>")
    per_set = [
        [
            r["model"],
            r["attack"],
            format_eps(r["eps"]),
            r["size"],
            r["labels"],
            r["n_images"],
            *(("n/a" if math.isnan(r[m]) else f"{r[m]:.3f}") for m in METRICS),
        ]
        for r in agg.per_set
    ]
    parts.append(
        _table(
            ["model", "attack", "ε", "|Ω|", "Ω", "images", *(METRIC_TITLES[m] for m in METRICS)],
            per_set,
            left=2,
        )
    )
    parts.append("</details></body></html>")
    return "\n".join(parts)
