"""`strata curate` on embeddings made elsewhere: a small text corpus, no images anywhere.

The registries ship no offline text embedder with its weights, so the test makes the embeddings
table itself (TF-IDF + truncated SVD, sklearn) from a long-tailed corpus of 8 hidden topics, with
integer ids and non-default column names (``doc_id``, ``vector``), a NaN row and exact duplicate
documents. Curation must flatten the topic distribution (the topics are never shown to it).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from pipeline.curate import run_curate
from pipeline.rundir import RunDir

REPO = Path(__file__).resolve().parents[2]
TOPICS = {  # hidden concepts and their pool sizes: long-tailed
    "football": 300,
    "markets": 150,
    "baking": 75,
    "galaxies": 40,
    "surgery": 24,
    "jazz": 16,
    "orchards": 12,
    "courts": 10,
}
WORDS = {
    "football": "goal striker penalty league match referee keeper pitch tackle offside coach season fans cup stadium",
    "markets": "stocks bonds yield investor shares index rally inflation dividend broker portfolio earnings rates fund trader",
    "baking": "flour oven dough yeast butter sugar bake crust loaf knead pastry whisk batter icing rise",
    "galaxies": "star galaxy orbit telescope nebula planet comet cosmic redshift quasar light dust spiral cluster dark",
    "surgery": "surgeon incision patient anaesthesia scalpel suture ward theatre wound recovery clinic organ biopsy nurse stitch",
    "jazz": "saxophone trumpet swing improvise chord bass drummer solo club blues tempo rhythm piano riff band",
    "orchards": "apple pear blossom prune harvest tree graft cider ladder ripe bough frost pick soil root",
    "courts": "judge jury verdict appeal lawyer witness trial defendant ruling sentence evidence court bail plea counsel",
}
COMMON = "the a of and to in is was for on with as it by at from this that be have".split()
TARGET = 48


def _corpus(seed: int = 0) -> tuple[list[str], list[str]]:
    """(documents, hidden topic of each): 18 words each, 70% topic words, 10% from another topic."""
    rng = np.random.default_rng(seed)
    names = list(TOPICS)
    docs, topics = [], []
    for topic, n in TOPICS.items():
        vocab = WORDS[topic].split()
        for _ in range(n):
            words = []
            for _ in range(18):
                u = rng.random()
                if u < 0.7:
                    words.append(vocab[rng.integers(len(vocab))])
                elif u < 0.8:
                    other = WORDS[names[rng.integers(len(names))]].split()
                    words.append(other[rng.integers(len(other))])
                else:
                    words.append(COMMON[rng.integers(len(COMMON))])
            docs.append(" ".join(words))
            topics.append(topic)
    return docs, topics


@pytest.fixture(scope="module")
def text_table(tmp_path_factory) -> tuple[Path, pa.Table]:
    """The corpus's embeddings as Parquet: doc_id (int64, shuffled), vector (list<float32>), topic, text."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    docs, topics = _corpus()
    docs += docs[:3]  # three documents posted twice: exact duplicates
    topics += topics[:3]
    x = TfidfVectorizer(sublinear_tf=True).fit_transform(docs)
    vectors = TruncatedSVD(32, random_state=0).fit_transform(x).astype(np.float32)
    rng = np.random.default_rng(1)
    doc_id = rng.permutation(len(docs)).astype(np.int64) * 7 + 1000
    rows = [list(map(float, v)) for v in vectors]
    rows[10][4] = float("nan")  # one broken vector: rejected, not fatal
    table = pa.table(
        {
            "doc_id": pa.array(doc_id),
            "vector": pa.array(rows, pa.list_(pa.float32())),
            "topic": topics,
            "text": docs,
        }
    )
    path = tmp_path_factory.mktemp("text") / "corpus.parquet"
    pq.write_table(table, path, row_group_size=200)
    return path, table


def _config(input_path: Path, run_dir: Path, *extra: str) -> dict:
    overrides = [
        f"input.path={input_path}",
        "input.format=embeddings",
        "input.id_column=doc_id",
        "input.embedding_column=vector",
        f"run_dir={run_dir}",
        "kmeans.n_clusters=[24,8]",
        "kmeans.sample_size=[4,2]",
        "kmeans.n_resampling_steps=[2,2]",
        "kmeans.in_process=true",
        f"sample.target_size={TARGET}",
        *extra,
    ]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return OmegaConf.to_container(compose("curate", overrides=overrides), resolve=True)


def _entropy(labels: list[str]) -> float:
    """Normalised entropy H / ln C over the 8 topics (1 = uniform)."""
    counts = np.array([labels.count(t) for t in TOPICS], dtype=np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum() / np.log(len(TOPICS)))


@pytest.fixture(scope="module")
def curated(text_table, tmp_path_factory) -> tuple[Path, dict]:
    path, _ = text_table
    run_dir = tmp_path_factory.mktemp("textrun") / "run"
    counts = run_curate(RunDir(str(run_dir)), _config(path, run_dir))
    return run_dir, counts


@pytest.mark.slow
def test_text_corpus_curates_to_a_subset_balanced_across_hidden_topics(text_table, curated):
    _, table = text_table
    run_dir, counts = curated
    manifest = pq.read_table(run_dir / "manifest.parquet")
    assert manifest.schema.field("id").type == pa.string()
    assert manifest.schema.field("doc_id").type == pa.int64()  # the original id, carried with its own type
    assert manifest.column("id").to_pylist() == [str(i) for i in manifest.column("doc_id").to_pylist()]
    assert {"topic", "text", "level_1", "level_2", "multiplicity"} <= set(manifest.column_names)
    assert "uri" not in manifest.column_names
    selected = [
        t
        for t, m in zip(manifest.column("topic").to_pylist(), manifest.column("multiplicity").to_pylist())
        for _ in range(m)
    ]
    assert len(selected) == TARGET
    pool = table.column("topic").to_pylist()
    # the pool: football 48% of documents, entropy 0.71; measured selection: at most 23%, entropy 0.95
    shares = {t: selected.count(t) / len(selected) for t in TOPICS}
    assert max(shares.values()) < 0.3, shares
    assert min(shares.values()) > 0, shares
    h_pool, h_sel = _entropy(pool), _entropy(selected)
    rng = np.random.default_rng(0)
    random_h = [_entropy([pool[i] for i in rng.choice(len(pool), TARGET, replace=False)]) for _ in range(500)]
    assert h_sel > h_pool + 0.1, (h_pool, h_sel)
    assert h_sel > np.quantile(random_h, 0.999), (h_sel, max(random_h))


def _topic_shares(run_dir: Path) -> dict[str, float]:
    manifest = pq.read_table(run_dir / "manifest.parquet")
    topics = np.repeat(manifest.column("topic").to_pylist(), manifest.column("multiplicity").to_numpy())
    return {t: float(np.mean(topics == t)) for t in TOPICS}


@pytest.mark.slow
def test_typiclust_inside_clusters_keeps_the_topic_balance_that_whole_pool_typiclust_breaks(
    text_table, curated, tmp_path
):
    """On a copy of the curated run: TypiClust inside the clusters of a level
    (budget_split 2: level 1, 24 clusters for 48 picks) keeps every topic under 30%; one k-means of the
    whole pool (budget_split null, TypiClust as published) hands the largest topic more (measured 56%)."""
    path, _ = text_table
    run_dir, _ = curated
    shares = {}
    for split in ("2", "null"):
        copy = tmp_path / f"run-{split}"
        shutil.copytree(run_dir, copy)
        extra = ("sample.strategy=typical", "sample.pick_level=budget", f"sample.budget_split={split}")
        counts = run_curate(RunDir(str(copy)), _config(path, copy, *extra))
        assert counts["sample"]["n_selected"] == TARGET and counts["sample"]["split_level"] == (
            1 if split == "2" else 0
        )
        shares[split] = _topic_shares(copy)
    assert max(shares["2"].values()) < 0.3 and min(shares["2"].values()) > 0, shares["2"]
    assert max(shares["null"].values()) > 0.4, shares["null"]


@pytest.mark.slow
def test_import_records_types_rejects_and_dedup_without_images(text_table, curated):
    _, table = text_table
    run_dir, counts = curated
    embed = counts["embed"]
    assert embed["read"] == table.num_rows == embed["kept"] + embed["rejected"]
    assert embed["rejected"] == 1 and embed["reject_reasons"] == {"nan-embedding": 1}
    assert (embed["id_type"], embed["id_column"], embed["embedding_column"], embed["dim"]) == (
        "int64",
        "doc_id",
        "vector",
        32,
    )
    rejects = pq.read_table(run_dir / "rejects.parquet").to_pylist()
    assert rejects[0]["id"] == str(table.column("doc_id")[10].as_py())
    # dedup: the three reposted documents are exact duplicates (identical vectors); copies need pixels
    dups = pq.read_table(run_dir / "dedup" / "duplicates.parquet")
    ids = table.column("doc_id").to_pylist()
    n = table.num_rows
    assert sorted(dups.column("id").to_pylist()) == sorted(str(ids[i]) for i in range(n - 3, n))
    assert set(dups.column("kept_id").to_pylist()) == {str(ids[i]) for i in range(3)}
    assert set(dups.column("kind").to_pylist()) == {"exact"}
    marker = json.loads((run_dir / "_markers" / "dedup.json").read_text())
    assert marker["exact_by"] == "embedding"
    assert "no images" in marker["skipped"]["near_duplicate"]
    report = (run_dir / "report.html").read_text()
    assert "no image (embeddings input)" in report and "data:image/jpeg" not in report


@pytest.mark.slow
def test_rerun_skips_and_a_changed_input_file_recomputes_from_the_import(text_table, curated):
    path, table = text_table
    run_dir, _ = curated
    cfg = _config(path, run_dir)
    before = {
        s: json.loads((run_dir / "_markers" / f"{s}.json").read_text())["finished_at"] for s in ("embed", "sample")
    }
    run_curate(RunDir(str(run_dir)), cfg)
    after = {
        s: json.loads((run_dir / "_markers" / f"{s}.json").read_text())["finished_at"] for s in ("embed", "sample")
    }
    assert after == before
    pq.write_table(table.slice(0, table.num_rows - 3), path)  # the input file changes: duplicates gone
    os.utime(path, (1e9, 1e9))
    counts = run_curate(RunDir(str(run_dir)), cfg)
    assert counts["embed"]["read"] == table.num_rows - 3
    assert counts["dedup"]["exact"] == 0
    marker = json.loads((run_dir / "_markers" / "sample.json").read_text())
    assert marker["finished_at"] > before["sample"]


@pytest.mark.slow
def test_the_curated_text_exports_as_jsonl_and_refuses_image_formats(curated, tmp_path):
    from pipeline.config import load_group
    from pipeline.export.rows import ExportConfig
    from pipeline.export.run import run_export

    run_dir, _ = curated
    export = load_group("export")["export"]
    run = RunDir(str(run_dir))
    record = run_export(run, str(tmp_path / "text"), ExportConfig.from_job("jsonl", "curated", export))
    lines = [json.loads(line) for line in (tmp_path / "text" / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == record["samples"] == TARGET
    assert all(isinstance(r["doc_id"], int) and r["id"] == str(r["doc_id"]) and r["text"] for r in lines)
    with pytest.raises(ValueError, match="needs images.*use format=jsonl"):
        run_export(run, str(tmp_path / "img"), ExportConfig.from_job("imagefolder", "curated", export))
