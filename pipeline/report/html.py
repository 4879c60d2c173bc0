"""Render :class:`ReportData` as one self-contained HTML page (inline CSS, SVG and JPEG data URIs)."""

from __future__ import annotations

import datetime as dt
import json
import math
from html import escape
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.active.stopping import LEGACY_FIELDS as LEGACY_ROUND_FIELDS
from pipeline.report.data import ReportData
from pipeline.report.svg import hbar_chart, line_chart, rank_size_chart

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d232b;background:#f6f7f9}
header{background:#1d2b3a;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#b9c6d3;font-size:13px;word-break:break-all}
main{max-width:1120px;margin:0 auto;padding:12px 28px 40px}
section{background:#fff;border:1px solid #e1e4e8;border-radius:8px;padding:14px 18px;margin:14px 0}
h2{font-size:17px;margin:0 0 10px}h3{font-size:14px;margin:12px 0 6px}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{flex:1 1 120px;border:1px solid #e1e4e8;border-radius:6px;padding:8px 12px}
.card b{display:block;font-size:22px}.card span{color:#5b6672;font-size:12px}
.row{display:flex;flex-wrap:wrap;gap:16px}.muted{color:#5b6672;font-size:12px}
table{border-collapse:collapse;font-size:12px}td,th{border-bottom:1px solid #eceef1;padding:3px 10px;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.gallery{display:flex;flex-wrap:wrap;gap:6px;margin:6px 0}.gallery figure{margin:0;width:96px}
.gallery img{width:96px;height:96px;object-fit:cover;border-radius:4px;display:block;background:#ddd}
.gallery figcaption{font-size:10px;line-height:1.25;color:#5b6672;overflow-wrap:anywhere}
details{border-top:1px solid #eceef1;padding:3px 0}summary{cursor:pointer;font-size:13px}
summary .muted{margin-left:6px}p.why{margin:6px 0;max-width:820px}p.ids{font-size:11px;margin:4px 0;overflow-wrap:anywhere}
.missing{width:96px;height:96px;background:#eee;border-radius:4px;font-size:10px;color:#a33;padding:4px;box-sizing:border-box;overflow:hidden}
.pairs{display:flex;flex-wrap:wrap;gap:14px}.pair{border:1px solid #e1e4e8;border-radius:6px;padding:6px}
.pair .gallery{margin:0}.pair p{margin:2px 0 0;font-size:11px;color:#5b6672}
pre{background:#f2f4f6;padding:8px;overflow:auto;font-size:11px;max-height:260px}
.chart{max-width:100%;height:auto}
"""

STAGE_ORDER = ("pretrain", "embed", "dedup", "cluster", "sample", "active", "report")
COUNT_LABELS = (
    ("read", "read"),
    ("rejected", "rejected (undecodable)"),
    ("deduplicated", "duplicates removed"),
    ("clustered", "clustered"),
    ("selected", "selected (with repeats)"),
    ("unique_selected", "selected (unique)"),
)


def _num(v: Any) -> str:
    return "–" if v is None else f"{v:,}" if isinstance(v, (int, np.integer)) else escape(str(v))


def normalized_entropy(counts: np.ndarray) -> float:
    """``H(p) / ln C`` of the distribution ``p = counts / sum`` over its ``C`` classes (1 = uniform)."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.sum() <= 0 or len(counts) < 2:
        return float("nan")
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum() / math.log(len(counts)))


def _config_rows(cfg: dict) -> list[tuple[str, Any]]:
    def get(path: str) -> Any:
        node: Any = cfg
        for key in path.split("."):
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    keys = (
        "input.path",
        "embed.backbone",
        "embed.image_size",
        "dedup.enabled",
        "kmeans.n_clusters",
        "kmeans.n_resampling_steps",
        "kmeans.metric",
        "sample.target_size",
        "sample.strategy",
        "seed",
    )
    return [(k, get(k)) for k in keys if get(k) is not None]


def _resolved(key: str, value: Any, data: ReportData) -> str:
    """What an ``auto`` setting resolved to in this run (the chosen k per level)."""
    if key == "kmeans.n_clusters" and value == "auto" and data.levels:
        chosen = [len(lv.before) for lv in data.levels]
        return f" &rarr; {escape(json.dumps(chosen))} <span class=muted>(chosen from the pool size)</span>"
    if key == "sample.strategy" and value == "auto" and data.selection.get("objective"):
        return f" &rarr; {escape(str(data.selection['objective']))} <span class=muted>(chosen from the budget)</span>"
    return ""


def _section(title: str, body: str, sid: str) -> str:
    return f'<section id="{sid}"><h2>{escape(title)}</h2>{body}</section>'


def render(data: ReportData, generated: dt.datetime | None = None) -> str:
    """The report page for ``data``."""
    generated = generated or dt.datetime.now(dt.UTC)
    out = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Strata run report: {escape(data.root)}</title><style>{CSS}</style></head><body>",
        f"<header><h1>Strata run report</h1><p>{escape(data.root)} · generated {generated:%Y-%m-%d %H:%M UTC}</p></header><main>",
    ]
    cards = "".join(
        f'<div class="card" id="count-{key}"><b>{_num(data.counts.get(key))}</b><span>{escape(label)}</span></div>'
        for key, label in COUNT_LABELS
        if key in data.counts
    )
    body = f'<div class="cards">{cards}</div>'
    if data.reject_reasons:
        rows = "".join(
            f"<tr><td>{escape(k)}</td><td class=n>{v:,}</td></tr>"
            for k, v in sorted(data.reject_reasons.items(), key=lambda kv: -kv[1])
        )
        body += f"<h3>Rejection reasons</h3><table><tr><th>reason</th><th class=n>images</th></tr>{rows}</table>"
    out.append(_section("Counts", body, "counts"))

    if data.timings:
        names = sorted(data.timings, key=lambda n: (STAGE_ORDER.index(n) if n in STAGE_ORDER else len(STAGE_ORDER), n))
        out.append(
            _section(
                "Stage timings",
                hbar_chart(names, {"seconds": [float(data.timings[n]) for n in names]}, unit="s")
                + f'<p class="muted">total {sum(map(float, data.timings.values())):.1f} s (wall clock per step, from run.json)</p>',
                "timings",
            )
        )

    if data.levels:
        charts = []
        for lv in data.levels:
            series = {"before sampling": lv.before}
            if lv.after is not None:
                series["after sampling"] = lv.after
            empty_after = "" if lv.after is None else f", {int((lv.after == 0).sum())} with nothing selected"
            charts.append(
                f"<div><h3>Level {lv.level}: {len(lv.before)} clusters</h3>{rank_size_chart(series)}"
                f'<p class="muted">sizes in images; largest {int(lv.before.max()):,}, smallest {int(lv.before.min()):,}'
                f"{empty_after}</p></div>"
            )
        out.append(
            _section("Cluster sizes per level (log scale)", f'<div class="row">{"".join(charts)}</div>', "clusters")
        )

    balance = _balance_body(data)
    if balance:
        out.append(_section("Balance before / after sampling", balance, "labels"))

    copies = copy_detection_sentence(data.copy_detection)
    if data.duplicate_pairs or copies:
        body = (f'<p class="why">{escape(copies)}</p>' if copies else "") + (
            _pairs_body(data) if data.duplicate_pairs else ""
        )
        out.append(_section("Duplicates removed (removed | kept)", body, "duplicates"))

    if data.gallery:
        out.append(_section("Clusters (level 1)", _cluster_browser(data), "gallery"))

    if data.active is not None and data.active.num_rows:
        out.append(_section("Active learning rounds", _active_body(data), "active"))

    if data.config:
        rows = "".join(
            f"<tr><td>{escape(k)}</td><td>{escape(json.dumps(v))}{_resolved(k, v, data)}</td></tr>"
            for k, v in _config_rows(data.config)
        )
        if rows:
            out.append(
                _section(
                    "Configuration", f"<table>{rows}</table><p class=muted>full resolved config: run.json</p>", "config"
                )
            )
    if data.progress:
        out.append(
            _section("Progress log (last lines)", f"<pre>{escape(chr(10).join(data.progress))}</pre>", "progress")
        )
    out.append("</main></body></html>")
    return "".join(out)


def _figure(t: Any) -> str:
    caption = escape(t.id).replace("/", "/<wbr>")  # long ids wrap after a folder first, else anywhere
    if t.src:
        return f'<figure><img src="{t.src}" alt="{escape(t.id)}"><figcaption title="{escape(t.id)}">{caption}</figcaption></figure>'
    return f'<figure><div class="missing">{escape(t.note)}</div><figcaption>{caption}</figcaption></figure>'


def _cluster_browser(data: ReportData, open_first: int = 3) -> str:
    """Every level-1 cluster as a collapsible gallery, largest first (the first ``open_first`` open)."""
    rows = []
    for i, g in enumerate(data.gallery):
        facts = [f"{g.size:,} images"]
        if g.selected is not None:
            facts.append(f"{g.selected:,} selected")
        if g.top_label is not None:
            facts.append(f"mostly {escape(g.top_label[0])} ({g.top_label[1]:.0%})")
        shown = (
            f"{len(g.thumbs)} of {g.size:,} shown, closest to the centroid first"
            if g.thumbs
            else "no thumbnails left in the budget (report.max_thumbs)"
        )
        if g.thumbs and not any(t.src for t in g.thumbs):  # nothing to picture (e.g. embeddings input): the ids
            members = f'<p class="ids">{escape(" · ".join(t.id for t in g.thumbs))}</p>'
            shown += f"; {escape(g.thumbs[0].note)}"
        else:
            members = f'<div class="gallery">{"".join(_figure(t) for t in g.thumbs)}</div>'
        rows.append(
            f'<details{" open" if i < open_first else ""} id="cluster-{g.cluster}"><summary><b>Cluster {g.cluster}</b>'
            f'<span class="muted">{" · ".join(facts)}</span></summary>{members}<p class="muted">{shown}</p></details>'
        )
    hidden = (
        f" {data.gallery_hidden:,} smaller clusters are not listed (report.max_clusters)."
        if data.gallery_hidden
        else ""
    )
    return (
        f'<p class="muted">{len(data.gallery):,} clusters, largest first; click one to open or close it. '
        f"Thumbnails: up to report.thumbs_per_cluster per cluster and report.max_thumbs in all, shared out "
        f"so that small clusters are shown whole.{hidden}</p>" + "".join(rows)
    )


def cluster_balance_sentence(lv: Any) -> str:
    """What balanced sampling did to one level's cluster sizes, computed from ``lv.before``/``lv.after``."""
    had = lv.before > 0
    before, after = lv.before[had], lv.after[had]
    whole = int((after >= before).sum())
    cut = int((after < before).sum())
    picked = after[after > 0]

    def spread(x: np.ndarray, unit: str = "") -> str:
        return f"{int(x.min()):,} to {int(x.max()):,}{unit} (largest/smallest {x.max() / max(x.min(), 1):.1f}x)"

    text = (
        f"Level {lv.level}: {len(before):,} clusters of {spread(before, ' images')}, normalised size entropy "
        f"{normalized_entropy(before):.3f}; the selection takes {spread(picked) if len(picked) else 'nothing'} "
        f"from each, entropy {normalized_entropy(after):.3f}. "
    )
    if cut and whole:
        text += f"{whole:,} small clusters were taken whole and the {cut:,} larger ones cut down to an equal share."
    elif cut:
        text += (
            f"Every cluster was cut down to an equal share{'' if len(picked) == len(before) else ' (some to none)'}."
        )
    else:
        text += "Every cluster was taken whole (the target is at least the pool)."
    return text


def label_balance_sentence(balance: Any) -> str:
    """Why the label entropy moved, from the labels' shares and their level-1 cluster footprints."""
    names = list(balance.counts)
    before = np.array([balance.counts[n][0] for n in names], dtype=np.float64)
    after = np.array([balance.counts[n][1] for n in names], dtype=np.float64)
    h0, h1 = normalized_entropy(before), normalized_entropy(after)
    if not (math.isfinite(h0) and math.isfinite(h1)):
        return ""
    move = "rose" if h1 > h0 + 5e-4 else "fell" if h1 < h0 - 5e-4 else "stayed"
    text = (
        f"Label entropy {move} from {h0:.3f} to {h1:.3f}" if move != "stayed" else f"Label entropy stayed at {h1:.3f}"
    )
    if not balance.footprint or after.sum() <= 0:
        return text + "."
    p0, p1 = before / max(before.sum(), 1), after / after.sum()
    fp = np.array([balance.footprint.get(n, 0.0) for n in names])
    predicted = None if not balance.predicted else np.array([balance.predicted.get(n, 0.0) for n in names])
    gain = p1 - p0
    up, down = int(np.argmax(gain)), int(np.argmin(gain))

    def one(i: int) -> str:
        guess = "" if predicted is None else f"; its clusters' selected counts predict {predicted[i]:.1%}"
        return f"<b>{escape(names[i])}</b> fills {fp[i]:.1f} of them (pool {p0[i]:.1%}, selection {p1[i]:.1%}{guess})"

    text += (
        f". Balanced sampling evens out clusters, not labels (it never reads them), and k-means splits the labels "
        f"over the {balance.n_clusters:,} level-1 clusters unevenly (a cluster counts by the label's share of it): "
        f"{one(up)}, while {one(down)}."
    )
    if predicted is not None and len(names) >= 3 and predicted.std() > 0 and p1.std() > 0:
        text += (
            " Over all labels, the shares predicted from the clusters (each cluster's selection having the "
            f"cluster's label mix) and the actual shares correlate at r = {np.corrcoef(predicted, p1)[0, 1]:.2f}."
        )
    if move == "fell" and h0 >= 0.99:
        text += (
            " The pool was already balanced by label; k-means splits the labels into unequal numbers of "
            "clusters, so evening out the clusters moves the selection away from that balance."
        )
    elif move == "rose":
        text += " Over-represented labels crowd into a few large clusters, which balancing cut down."
    return text


def selection_sentence(data: ReportData) -> str:
    """Which objective chose the points inside each level-1 cluster, and what the selection did to
    small concepts: the smallest quarter of the top-level clusters (and the rarer half of the labels,
    when a label column exists) against the expectation for a uniformly random subset of the same size."""
    objective = data.selection.get("objective")
    if not objective or not data.levels or data.levels[-1].after is None:
        return ""
    from pipeline.sampling.objectives import OBJECTIVES

    strategy = data.selection.get("strategy", objective)
    how = OBJECTIVES[objective].summary if objective in OBJECTIVES else objective
    level = data.selection.get("pick_level", 1)
    split = int(data.selection.get("split_level") or 0)
    where = (
        f"The budget was water-filled down to the level-{split} clusters, then inside each of them a k-means with "
        "k = its budget ran (TypiClust inside each cluster, keeping the balance); inside each of those sub-clusters"
        if level == "budget" and split
        else "Inside each of target_size clusters of a k-means with k = target_size (TypiClust)"
        if level == "budget"
        else f"Inside every level-{escape(str(level))} cluster"
    )
    text = f"{where} the selection took <b>{escape(str(objective))}</b>: {escape(how)}"
    power = float(data.selection.get("allocation_power", 0) or 0)
    if power and level != "budget":
        text += f"; each cluster's share of its parent's budget ~ size^{power:g} (capped at its size)"
    if strategy == "auto":
        text += " (sample.strategy=auto chose it from the budget's share of the pool; README, 'Which objective')"
    top = data.levels[-1]
    had = top.before > 0
    before, after = top.before[had].astype(np.float64), top.after[had].astype(np.float64)
    n, t = before.sum(), after.sum()
    if n <= 0 or t <= 0:
        return text + "."
    small = before <= np.quantile(before, 0.25)
    p_random = 1 - np.exp(before[small] * np.log1p(-min(t / n, 1 - 1e-12)))  # P(>= 1 pick) ~ 1-(1-t/N)^n_c
    text += (
        f". Small concepts: the {int(small.sum()):,} smallest top-level clusters (at most "
        f"{int(before[small].max()):,} images each, {before[small].sum() / n:.1%} of the pool) hold "
        f"{after[small].sum() / t:.1%} of the selection and {int((after[small] > 0).sum()):,} of them got at least one "
        f"image; a random subset of the same size would give them {before[small].sum() / n:.1%} and reach about "
        f"{p_random.sum():.0f}."
    )
    if data.labels:
        names = list(data.labels.counts)
        b = np.array([data.labels.counts[k][0] for k in names], dtype=np.float64)
        a = np.array([data.labels.counts[k][1] for k in names], dtype=np.float64)
        if b.sum() > 0 and a.sum() > 0 and len(names) >= 2:
            rare = np.argsort(b, kind="stable")[: len(names) // 2]
            text += (
                f" The rarer half of the labels ({len(rare)} of {len(names)}) is {b[rare].sum() / b.sum():.1%} of the "
                f"pool and {a[rare].sum() / a.sum():.1%} of the selection; {int((a[rare] == 0).sum())} of them got nothing."
            )
    return text


def _balance_body(data: ReportData) -> str:
    """Cluster-size and label balance before / after sampling, each with a sentence on why."""
    parts = [
        f'<p class="why">{cluster_balance_sentence(lv)}</p>'
        for lv in data.levels[:1] + data.levels[1:][-1:]
        if lv.after is not None
    ]
    chosen = selection_sentence(data)
    if chosen:
        parts.append(f'<h3>Selection objective and small concepts</h3><p class="why">{chosen}</p>')
    if data.labels:
        names = list(data.labels.counts)
        before = np.array([data.labels.counts[n][0] for n in names], dtype=np.float64)
        after = np.array([data.labels.counts[n][1] for n in names], dtype=np.float64)
        frac = {
            "before (input)": before / max(before.sum(), 1) * 100,
            "after (selection)": after / max(after.sum(), 1) * 100,
        }
        parts.append(
            f'<h3>Labels (carried column, never used for curation)</h3><p class="why">{label_balance_sentence(data.labels)}</p>'
            + hbar_chart(names, frac, unit="%", bar=8, value_fmt="{:.1f}")
            + '<p class="muted">share of each label; normalised entropy H/ln C (1 = uniform)</p>'
        )
    return "".join(parts)


def copy_detection_sentence(record: dict | None) -> str:
    """One sentence on the copy calibration of run.json (empty without one); says so when unreliable."""
    if not record or not record.get("calibrated"):
        return ""
    if not record.get("reliable", True):
        return (
            f"Copy detection is unreliable on this collection: even the strictest setting would remove "
            f"{100 * record.get('false_match_rate', 0):.1f}% of distinct images, so near-duplicates were kept "
            "(exact duplicates are still removed)."
        )
    return (
        f"Copy detection calibrated on {record.get('sample', 0)} synthetic copies: estimated recall "
        f"{100 * record.get('recall_estimate', 0):.0f}%, estimated false-match rate "
        f"{100 * record.get('false_match_rate', 0):.2f}%, estimated copy share {100 * record.get('copy_share', 0):.1f}%."
        + (
            f" {record['unverifiable']} near-flat images were too plain to verify copies of and were kept."
            if record.get("unverifiable")
            else ""
        )
    )


def _pairs_body(data: ReportData) -> str:
    """Each removed image next to the image kept in its place, with kind and distance."""
    cells = []
    for p in data.duplicate_pairs:
        measure = []
        if p.distance is not None:
            unit = (
                " bits (pHash, of 64)"
                if p.kind == "near_duplicate"
                else " (1 - cosine)"
                if p.kind == "semantic"
                else ""
            )
            measure.append(f"distance {p.distance:.3g}{unit}")
        if p.similarity is not None:
            measure.append(f"similarity {p.similarity:.3f}")
        cells.append(
            f'<div class="pair"><div class="gallery">{_figure(p.removed)}{_figure(p.kept)}</div>'
            f"<p><b>{escape(p.kind)}</b> · {escape(', '.join(measure))}</p></div>"
        )
    return (
        f'<div class="pairs">{"".join(cells)}</div><p class="muted">Left: removed; right: kept in its place. '
        "Per kind, the pairs farthest apart first: the ones closest to the threshold. exact = same pixels; "
        "near_duplicate = the same picture re-encoded, resized, cropped, flipped, rotated or colour-shifted; "
        "semantic = different photos with alike embeddings (dedup.semantic).</p>"
    )


ACTIVE_CHARTS = (  # (title, columns of active/rounds.parquet, values are fractions)
    ("Positives found (labeled positive)", ("n_positive_labeled",), False),
    ("Labeled fraction", ("labeling_effort",), True),
    ("Labeled images", ("n_labeled",), False),
    (
        "Estimated recall of the exported set (human + model positives)",
        ("exported_recall_est", "exported_recall_lo", "exported_recall_hi", "positives_retrieved"),
        True,
    ),
    (
        "Estimated precision of the model's positive calls",
        ("model_precision_est", "model_precision_lo", "model_precision_hi", "precision"),
        True,
    ),
    (
        "Estimated share of the positives labeled by a person (audit)",
        ("labeled_recall_est", "labeled_recall_lo", "labeled_recall_hi", "recall_labeled"),
        True,
    ),
    ("Positives estimated still unlabeled", ("remaining_est", "remaining_lo", "remaining_hi"), False),
    (
        "Estimated errors of the model's calls",
        ("missed_est", "false_calls_est", "missed_audit", "false_calls_audit"),
        False,
    ),
    ("Audit labels (random sample)", ("audit_labeled", "audit_positive"), False),
    ("Oracle metrics", ("f1", "recall", "false_positive_rate"), True),
    ("Share of predictions changed", ("changed_share",), True),
    ("Seconds per round", ("train_seconds", "score_seconds", "select_seconds"), False),
)


def _numeric(table: pa.Table, name: str) -> np.ndarray | None:
    col = table.column(name)
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        return None
    y = np.array([np.nan if v is None else v for v in col.to_pylist()], dtype=np.float64)
    return y if np.isfinite(y).any() else None


def _active_body(data: ReportData) -> str:
    """Per-round curves of ``active/rounds.parquet``: positives found, labeled fraction, F1 and the
    other oracle metrics (when an oracle exists), then any other numeric column on its own."""
    table = data.active
    assert table is not None
    # rounds.parquet written before issue 30 named the labeled share recall_est / _lo / _hi
    table = table.rename_columns([LEGACY_ROUND_FIELDS.get(c, c) for c in table.column_names])
    xcol = "round" if "round" in table.column_names else None
    x = table.column(xcol).to_numpy().astype(np.float64) if xcol else np.arange(table.num_rows, dtype=np.float64)
    groups = [(t, [c for c in cols if c in table.column_names], b) for t, cols, b in ACTIVE_CHARTS]
    known = {c for _, cols, _ in groups for c in cols} | {xcol}
    groups += [(name, [name], False) for name in table.column_names if name not in known]
    charts = []
    for title, cols, bounded in groups:
        series = {c: y for c in cols if (y := _numeric(table, c)) is not None}
        if not series:
            continue
        fractions = bounded and all(np.nanmin(y) >= 0 and np.nanmax(y) <= 1 for y in series.values())
        chart = line_chart(
            x, series, ylabel="" if len(series) > 1 else next(iter(series)), y_range=(0.0, 1.0) if fractions else None
        )
        charts.append(f"<div><h3>{escape(title)}</h3>{chart}</div>")
    body = (
        f'<div class="row">{"".join(charts)}</div>' if charts else '<p class="muted">no numeric per-round columns</p>'
    )
    return _recall_sentence(table) + body


def _recall_sentence(table: pa.Table) -> str:
    """What the audit says about the exported set after the last round (``strata active stop.audit_size``)."""
    if "exported_recall_est" not in table.column_names and "labeled_recall_est" not in table.column_names:
        return ""
    rows = [r for r in table.to_pylist() if r.get("labeled_recall_est") is not None]
    if not rows:
        return ""
    r = rows[-1]
    out = []
    if r.get("exported_recall_est") is not None:
        out.append(
            f"After round {r['round']} the exported set (human labels plus the model's {r['n_model_positive']} "
            f"positive calls) holds an estimated <b>{r['exported_recall_est']:.0%}</b> of the pool's positives "
            f"(interval {r['exported_recall_lo']:.0%} to {r['exported_recall_hi']:.0%})"
            + (
                f"; an estimated <b>{r['model_precision_est']:.0%}</b> of the model's calls are right "
                f"(interval {r['model_precision_lo']:.0%} to {r['model_precision_hi']:.0%})"
                if r.get("model_precision_est") is not None
                else ""
            )
            + ". "
        )
    out.append(
        f"People labeled an estimated <b>{r['labeled_recall_est']:.0%}</b> of the pool's positives themselves "
        f"(interval {r['labeled_recall_lo']:.0%} to {r['labeled_recall_hi']:.0%}), from {r['audit_labeled']} "
        f"random audit labels ({r['audit_positive']} positive)."
    )
    if r.get("stop_rule"):
        out.append(f" Stopped: {escape(str(r['stop_rule']))}.")
    return f"<p>{''.join(out)}</p>"
