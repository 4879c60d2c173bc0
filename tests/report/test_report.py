"""The run report: numbers against the run directory, self-containment, atomic write, SVG helpers."""

from __future__ import annotations

import base64
import io
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from scipy.stats import entropy

from pipeline.kmeans.levels import load_levels, load_point_ids
from pipeline.report import write_report
from pipeline.report.data import LabelBalance, LevelSizes, Thumb, gather, load_many_bytes
from pipeline.report.html import cluster_balance_sentence, label_balance_sentence, normalized_entropy, render
from pipeline.report.svg import hbar_chart, line_chart, log_ticks, nice_ticks, rank_size_chart
from pipeline.rundir import RunDir
from tests.report.conftest import BLOBS, build_run


class _Links(HTMLParser):
    """Every URL-valued attribute and every tag of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.urls += [v for k, v in attrs if k in ("src", "href", "srcset", "data", "action", "poster") and v]


def test_counts_match_the_run_directory(finished_run):
    data = gather(finished_run, {})
    n = sum(BLOBS.values())
    manifest = pq.read_table(finished_run.path("manifest.parquet"))
    assert data.counts["kept"] == n
    assert data.counts["rejected"] == 3
    assert data.counts["read"] == n + 3
    assert data.counts["deduplicated"] == 2
    assert data.counts["selected"] == sum(manifest.column("multiplicity").to_pylist()) == 24
    assert data.counts["unique_selected"] == manifest.num_rows
    assert data.reject_reasons == {"corrupt or truncated": 2, "not an image": 1}
    assert data.timings["embed"] == 12.5


def test_cluster_sizes_before_and_after_sampling(finished_run):
    data = gather(finished_run, {})
    _, levels = load_levels(finished_run)
    manifest = pq.read_table(finished_run.path("manifest.parquet")).to_pandas()
    assert [lv.level for lv in data.levels] == [1, 2]
    # level 1: cluster sizes are the CSR cluster lengths; level 2 in points = sum over children
    np.testing.assert_array_equal(data.levels[0].before, np.diff(levels[0].offsets))
    l2_of_point = levels[1].assignments[levels[0].assignments]
    for c in range(len(levels[1].offsets) - 1):
        assert data.levels[1].before[c] == int((l2_of_point == c).sum())
    assert data.levels[0].before.sum() == data.levels[1].before.sum() == sum(BLOBS.values()) - 2
    for lv in (1, 2):
        ref = manifest.groupby(f"level_{lv}")["multiplicity"].sum()
        after = data.levels[lv - 1].after
        assert after.sum() == 24
        for c, m in ref.items():
            assert after[c] == m
        # a cluster cannot contribute more distinct items than it holds
        unique = manifest.groupby(f"level_{lv}").size()
        for c, u in unique.items():
            assert 0 < u <= data.levels[lv - 1].before[c]
        assert np.all(after[data.levels[lv - 1].before == 0] == 0)


def test_auto_k_shows_the_chosen_clusters_per_level(finished_run):
    _, levels = load_levels(finished_run)
    chosen = [len(lv.offsets) - 1 for lv in levels]
    html = render(gather(finished_run, {"kmeans": {"n_clusters": "auto"}}))
    assert f"&quot;auto&quot; &rarr; {chosen}" in html
    explicit = render(gather(finished_run, {"kmeans": {"n_clusters": chosen}}))
    assert "&rarr;" not in explicit and "chosen from the pool size" not in explicit


def test_cluster_browser_lists_every_cluster_within_the_thumbnail_budget(finished_run):
    opts = {"thumbs_per_cluster": 4, "max_thumbs": 10, "thumb_size": 40}
    data = gather(finished_run, {"report": opts})
    _, levels = load_levels(finished_run)
    sizes = np.diff(levels[0].offsets)
    shown = [g.cluster for g in data.gallery]
    assert sorted(shown) == np.flatnonzero(sizes > 0).tolist() and data.gallery_hidden == 0
    assert [g.size for g in data.gallery] == sorted(sizes[sizes > 0].tolist(), reverse=True)
    # the budget is water-filled: capped at 4 per cluster, 10 in all, counts differ by at most 1
    counts = np.array([len(g.thumbs) for g in data.gallery])
    caps = np.minimum([g.size for g in data.gallery], 4)
    assert counts.sum() == min(10, caps.sum()) and np.all(counts <= caps)
    assert counts[counts < caps].max(initial=0) >= counts.max() - 1
    point_ids = load_point_ids(finished_run).column("id").to_pylist()
    manifest = pq.read_table(finished_run.path("manifest.parquet")).to_pandas()
    selected = manifest.groupby("level_1")["multiplicity"].sum()
    for g in data.gallery:
        start = levels[0].offsets[g.cluster]
        closest = [point_ids[i] for i in levels[0].sorted_clusters[start : start + len(g.thumbs)]]
        assert [t.id for t in g.thumbs] == closest  # closest to the centroid first
        assert g.selected == selected.get(g.cluster, 0)
        labels = [i.split("/")[0] for i in point_ids if levels[0].assignments[point_ids.index(i)] == g.cluster]
        top = max(set(labels), key=labels.count)
        assert g.top_label == (top, pytest.approx(labels.count(top) / len(labels)))
        for t in g.thumbs:
            if t.src is None:
                continue
            img = Image.open(io.BytesIO(base64.b64decode(t.src.split(",", 1)[1])))
            assert img.format == "JPEG" and max(img.size) <= 40
    capped = gather(finished_run, {"report": {**opts, "max_clusters": 2}})
    assert [g.cluster for g in capped.gallery] == shown[:2] and capped.gallery_hidden == len(shown) - 2
    html = render(capped)
    assert html.count("<details") == 2 and f"{len(shown) - 2} smaller clusters are not listed" in html


def test_cluster_browser_html_every_cluster_collapsible_with_full_captions(finished_run):
    data = gather(finished_run, {"report": {"thumbs_per_cluster": 60, "max_thumbs": 1000}})
    html = render(data)
    body = html.split('id="gallery"')[1].split("</section>")[0]
    for g in data.gallery:
        assert f'id="cluster-{g.cluster}"><summary><b>Cluster {g.cluster}</b>' in body
        assert f"{g.size:,} images" in body
    assert body.count("<details") == len(data.gallery) and body.count("<details open") == min(3, len(data.gallery))
    assert body.count("<img") == sum(1 for g in data.gallery for t in g.thumbs if t.src)
    assert sum(len(g.thumbs) for g in data.gallery) == sum(BLOBS.values()) - 2  # every clustered image, once
    caption_css = html.split(".gallery figcaption{")[1].split("}")[0]
    assert "nowrap" not in caption_css and "ellipsis" not in caption_css


def test_clusters_without_any_picture_list_their_ids(finished_run):
    data = gather(finished_run, {"report": {"thumbs_per_cluster": 3}})
    for g in data.gallery:
        g.thumbs = [Thumb(t.id, None, "no image (embeddings input)") for t in g.thumbs]
    body = render(data).split('id="gallery"')[1]
    first = data.gallery[0]
    assert f'<p class="ids">{" · ".join(t.id for t in first.thumbs)}</p>' in body
    assert "<figure>" not in body and "3 of" in body and "; no image (embeddings input)" in body


def test_missing_image_becomes_a_placeholder(tmp_path, ray_session):
    run = build_run(tmp_path, missing_image="runway/000.png")
    data = gather(run, {"report": {"thumbs_per_cluster": 60, "max_thumbs": 1000}})
    thumbs = {t.id: t for g in data.gallery for t in g.thumbs}
    assert thumbs["runway/000.png"].src is None and "FileNotFoundError" in thumbs["runway/000.png"].note
    assert thumbs["runway/001.png"].src.startswith("data:image/jpeg;base64,")


def test_label_balance_entropy_and_cluster_footprint(finished_run):
    data = gather(finished_run, {})
    manifest = pq.read_table(finished_run.path("manifest.parquet")).to_pandas()
    counts = data.labels.counts
    assert {k: v[0] for k, v in counts.items()} == BLOBS
    assert {k: v[1] for k, v in counts.items() if v[1]} == manifest.groupby("label")["multiplicity"].sum().to_dict()
    c = np.array([5, 0, 20, 3])
    assert normalized_entropy(c) == pytest.approx(entropy(c) / math.log(4))
    assert normalized_entropy(np.array([7, 7, 7])) == pytest.approx(1.0)
    # balanced sampling flattens the label distribution of unbalanced blobs
    before = np.array([v[0] for v in counts.values()])
    after = np.array([v[1] for v in counts.values()])
    assert normalized_entropy(after) > normalized_entropy(before)
    # footprint = sum over clusters of the label's share of the cluster, against a pandas crosstab
    _, levels = load_levels(finished_run)
    ids = load_point_ids(finished_run).column("id").to_pylist()
    points = pd.DataFrame({"label": [i.split("/")[0] for i in ids], "cluster": levels[0].assignments})
    share = pd.crosstab(points.label, points.cluster, normalize="columns")
    assert data.labels.footprint == pytest.approx(share.sum(axis=1).to_dict())
    assert data.labels.n_clusters == points.cluster.nunique()
    assert sum(data.labels.footprint.values()) == pytest.approx(data.labels.n_clusters)
    selected = manifest.groupby("level_1")["multiplicity"].sum().reindex(share.columns, fill_value=0)
    predicted = (share * selected).sum(axis=1) / selected.sum()
    assert data.labels.predicted == pytest.approx(predicted.to_dict())


def test_balance_sentences_are_computed_from_the_data():
    # a label-balanced pool whose labels k-means split into 6, 3 and 1 clusters of equal size
    balance = LabelBalance(
        {"a": (100, 36), "b": (100, 18), "c": (100, 6)},
        footprint={"a": 6.0, "b": 3.0, "c": 1.0},
        predicted={"a": 0.55, "b": 0.3, "c": 0.15},
        n_clusters=10,
    )
    text = label_balance_sentence(balance)
    h1 = normalized_entropy(np.array([36, 18, 6]))
    assert text.startswith(f"Label entropy fell from 1.000 to {h1:.3f}")
    assert "over the 10 level-1 clusters" in text
    assert (
        "<b>a</b> fills 6.0 of them (pool 33.3%, selection 60.0%; its clusters' selected counts predict 55.0%)" in text
    )
    assert (
        "<b>c</b> fills 1.0 of them (pool 33.3%, selection 10.0%; its clusters' selected counts predict 15.0%)" in text
    )
    r = np.corrcoef([0.55, 0.3, 0.15], [0.6, 0.3, 0.1])[0, 1]
    assert f"correlate at r = {r:.2f}" in text and "already balanced" in text
    skewed = LabelBalance({"a": (90, 10), "b": (10, 10)}, footprint={"a": 1.0, "b": 1.0}, n_clusters=2)
    text = label_balance_sentence(skewed)
    assert "rose" in text and "already balanced" not in text and "crowd into a few large clusters" in text
    assert label_balance_sentence(LabelBalance({"a": (5, 2), "b": (5, 2)})) == "Label entropy stayed at 1.000."
    level = LevelSizes(1, before=np.array([40, 10, 3, 0]), after=np.array([8, 8, 3, 0]))
    text = cluster_balance_sentence(level)
    assert text.startswith("Level 1: 3 clusters of 3 to 40 images (largest/smallest 13.3x)")
    assert "takes 3 to 8 (largest/smallest 2.7x) from each" in text
    assert "1 small clusters were taken whole and the 2 larger ones cut down to an equal share" in text


def test_report_is_self_contained_and_written_atomically(finished_run):
    path = write_report(finished_run, {"seed": 0, "report": {"enabled": True}})
    assert path == finished_run.path("report.html")
    html = Path(path).read_text()
    parser = _Links()
    parser.feed(html)
    assert parser.urls and all(u.startswith("data:") or u.startswith("#") for u in parser.urls)
    assert not {"script", "link", "iframe"} & parser.tags
    assert "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    for section in ('id="counts"', 'id="timings"', 'id="clusters"', 'id="gallery"', 'id="labels"'):
        assert section in html
    assert html.count("<svg") >= 4
    leftovers = [p.name for p in Path(finished_run.root).iterdir() if ".tmp-" in p.name]
    assert leftovers == []


def test_failed_render_leaves_no_report(tmp_path, monkeypatch):
    run = RunDir(str(tmp_path / "run"))
    run.update_run_json(timings={"embed": 1.0})

    def boom(*_):
        raise RuntimeError("render failed")

    monkeypatch.setattr("pipeline.report.render", boom)
    with pytest.raises(RuntimeError):
        write_report(run, {})
    assert not run.exists("report.html")


def test_partial_run_and_active_rounds(tmp_path):
    """An active run without clusters/manifest still gets a report, with its round curves."""
    run = RunDir(str(tmp_path / "active"))
    # the columns pipeline/active writes (oracle metrics only when an oracle exists)
    rounds = pa.table(
        {
            "round": [0, 1, 2, 3],
            "n_labeled": [10, 20, 30, 40],
            "n_positive_labeled": [3, 9, 17, 22],
            "labeling_effort": [0.01, 0.02, 0.03, 0.04],
            "f1": [None, 0.41, 0.55, 0.62],
            "recall": [0.1, 0.3, 0.5, 0.6],
            "changed_share": [None, None, None, None],
            "note": ["a", "b", "c", "d"],
            "extra_score": [1.0, 2.0, 3.0, 4.0],
        }
    )
    run.fs.makedirs(run.local("active"), exist_ok=True)
    pq.write_table(rounds, run.local("active", "rounds.parquet"))
    run.update_run_json(timings={"active": 4.0})
    html = render(gather(run, {}))
    assert 'id="active"' in html and 'id="clusters"' not in html and 'id="gallery"' not in html
    titles = [t.split("</h3>")[0] for t in html.split('id="active"')[1].split("<h3>")[1:]]
    assert titles == [
        "Positives found (labeled positive)",
        "Labeled fraction",
        "Labeled images",
        "Oracle metrics",
        "extra_score",
    ]
    # f1 + recall share one chart; the all-null and the text column are left out
    assert html.count("<polyline") == 6


def test_parquet_uris_resolve_rows_across_row_groups(tmp_path):
    blobs = [bytes([i]) * (i + 1) for i in range(10)]
    pq.write_table(
        pa.table({"id": [str(i) for i in range(10)], "image": blobs}), tmp_path / "x.parquet", row_group_size=4
    )
    uris = [f"{tmp_path / 'x.parquet'}#{i}" for i in (9, 0, 5, 12)]
    got = load_many_bytes(uris)
    assert got[uris[0]] == blobs[9] and got[uris[1]] == blobs[0] and got[uris[2]] == blobs[5]
    assert isinstance(got[uris[3]], KeyError)


def test_ticks():
    assert nice_ticks(0, 9.3, 4) == [0, 2, 4, 6, 8, 10]
    assert nice_ticks(0.0, 1.0, 4) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert log_ticks(3, 4500) == [1, 10, 100, 1000, 10000]
    with pytest.raises(ValueError):
        log_ticks(0, 10)


def test_charts_place_values_on_their_scales():
    svg = rank_size_chart({"before": [1000, 10, 100, 1], "after": [10, 10, 0, 1]})
    assert svg.count("<polyline") == 2
    # log axis: 1000 sits at the top of the plot box, 1 at the bottom (y0=24, y1=height-34=226)
    first = svg.split('points="')[1].split('"')[0].split()
    assert first[0] == "56.0,24.0" and first[-1].endswith(",226.0")
    # linear axis from 0: plot width 640 - 150 - 60 = 430 px spans the ticks 0..4, so 1 -> 107.5 px, 4 -> 430 px
    bars = hbar_chart(["a", "b"], {"s": [1.0, 4.0]})
    widths = [float(w) for w in re.findall(r'<rect x="150" y="[\d.]+" width="([\d.]+)"', bars)]
    assert widths == [107.5, 430.0]
    with pytest.raises(ValueError):
        hbar_chart(["a"], {"s": [-1.0]})
    line = line_chart([0, 1, 2], {"f1": [float("nan"), 0.5, 1.0]}, y_range=(0, 1))
    assert line.count("<circle") == 2
