"""Selection objectives vs random in the labelling-budget regime (issue 32), and an SSL command.

**Labelling-budget regime.** A pool with long-tailed (Zipf) class sizes and a disjoint balanced
test set are built from a labelled collection; every image is embedded once with the default
backbone (``conf/embed/efficientnet_lite0.yaml``, 224 px, frozen) and cached under
``benchmarks/.cache/selection-<pool>/``. For a budget of B images per class (B*C in all) each arm
picks B*C images of the pool without labels; a multinomial logistic regression (the linear
probe) is fitted on the picked images with their true labels and scored on the test set:

    balanced accuracy = mean_c recall_c,    tail recall = mean recall over the C/2 smallest pool classes.

Arms: ``uniform random``; the balanced hierarchical sampling that ``strata curate`` runs (its
default k-means, ``pipeline.kmeans`` on the pool) with the settings of ``SELECTIONS`` (``--arms``):
every objective of ``pipeline.sampling.objectives.OBJECTIVES`` inside level-1 clusters, ``typical``
at the top level, ``typical`` in budget-sized clusters (TypiClust: k-means with k = B*C, the most
typical point of each), ``TypiClust split m`` (the budget water-filled down to the finest level with
at most B*C/m clusters, then TypiClust inside each: ``sample.budget_split``) and ``coverage`` with the
budget split ~ sqrt(cluster size); ``k-center coreset`` (``strata coreset``, exact greedy, seed-free);
``default (auto)``: what ``conf/sampling/default.yaml`` resolves to per budget (the settings in
brackets), i.e. what a user gets; ``previous default (session 10)``: session 10's ``auto``. Mean +- std
over ``--seeds`` seeds (the seed drives k-means, sampling and random draws).

Pools: ``ucmerced`` (21 classes), ``aid`` (AID 150 px, 30 classes), ``digits`` (scikit-learn's
8x8 grey digits upscaled to 64 px, 10 classes) and ``shapes`` (generated 64 px grey shapes with
random pose, size, contrast and noise, 10 classes). ::

    .venv/bin/python -m benchmarks.selection_downstream --pools ucmerced aid digits shapes --seeds 10
    # or split the seeds over processes, then join: --seed-start 4 --seeds 3 --no-kcenter --out b.json ...
    .venv/bin/python -m benchmarks.selection_downstream --combine a.json b.json c.json

**SSL regime on a dirty pool** (copies + distractors), for a GPU machine: ``--ssl`` prints the
ready command (``benchmarks.curation_downstream`` with copies, on the GPU backbone); not run here.
"""

from __future__ import annotations

import argparse
import io
import json
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from benchmarks.common import CACHE, DATASETS, machine

AID_PER_CLASS = 80
SHAPES = ("circle", "square", "triangle", "pentagon", "hexagon", "star", "cross", "ring", "crescent", "bar")


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, format="PNG")
    return out.getvalue()


def digits_table() -> pa.Table:
    """scikit-learn's 1,797 8x8 grey digits (values 0-16) upscaled to 64 px, as ``id``, ``label``, ``image``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = (d.images * (255 / 16)).astype(np.uint8)
    data = [_png(Image.fromarray(255 - im).resize((64, 64), Image.BILINEAR)) for im in imgs]
    return pa.table(
        {
            "id": [f"digits/{i:05d}" for i in range(len(imgs))],
            "label": [str(t) for t in d.target],
            "image": data,
        }
    )


def _polygon(n: int, r: float, cx: float, cy: float, theta: float, inner: float | None = None) -> list:
    k = np.arange(2 * n if inner else n)
    radius = np.where(k % 2 == 1, inner * r, r) if inner else np.full(len(k), r)
    angle = theta + k * (np.pi / n if inner else 2 * np.pi / n)
    return list(zip(cx + radius * np.cos(angle), cy + radius * np.sin(angle)))


def shape_image(kind: str, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """One grey ``kind`` shape: random centre, radius 10-24 px, rotation, contrast and pixel noise."""
    bg = int(rng.integers(0, 256))
    fg = (bg + int(rng.integers(64, 193))) % 256  # contrast of at least 64 grey levels
    img = Image.new("L", (size, size), bg)
    dr = ImageDraw.Draw(img)
    r = float(rng.uniform(10, 24))
    cx, cy = (float(v) for v in rng.uniform(r, size - r, 2))
    th = float(rng.uniform(0, 2 * np.pi))
    box = (cx - r, cy - r, cx + r, cy + r)
    if kind == "circle":
        dr.ellipse(box, fill=fg)
    elif kind == "ring":
        dr.ellipse(box, outline=fg, width=max(2, int(r / 4)))
    elif kind == "crescent":
        dr.ellipse(box, fill=fg)
        off = 0.5 * r
        dr.ellipse(
            (
                cx - r + off * np.cos(th),
                cy - r + off * np.sin(th),
                cx + r + off * np.cos(th),
                cy + r + off * np.sin(th),
            ),
            fill=bg,
        )
    elif kind in ("square", "triangle", "pentagon", "hexagon"):
        n = {"square": 4, "triangle": 3, "pentagon": 5, "hexagon": 6}[kind]
        dr.polygon(_polygon(n, r, cx, cy, th), fill=fg)
    elif kind == "star":
        dr.polygon(_polygon(5, r, cx, cy, th, inner=0.45), fill=fg)
    elif kind in ("cross", "bar"):
        w = r / 3
        arms = (0.0, np.pi / 2) if kind == "cross" else (0.0,)
        for a in arms:
            c, s = np.cos(th + a), np.sin(th + a)
            pts = [(-r, -w), (r, -w), (r, w), (-r, w)]
            dr.polygon([(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts], fill=fg)
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, rng.uniform(0, 20), (size, size))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def shapes_table(per_class: int = 300, seed: int = 0) -> pa.Table:
    """``per_class`` generated grey shapes of each of the 10 ``SHAPES`` (``id``, ``label``, ``image``)."""
    rng = np.random.default_rng(seed)
    ids, labels, data = [], [], []
    for kind in SHAPES:
        for i in range(per_class):
            ids.append(f"{kind}/{i:05d}")
            labels.append(kind)
            data.append(_png(shape_image(kind, rng)))
    return pa.table({"id": ids, "label": labels, "image": data})


def aid_subset_table(per_class: int = AID_PER_CLASS) -> pa.Table:
    """The first ``per_class`` images of every AID class by ``crc32(id)`` (embedding all 10,000 on
    two shared cores takes ~20 min; this keeps the benchmark rerunnable)."""
    table = pa.concat_tables(pq.read_table(p) for p in sorted((DATASETS / "aid150").glob("*.parquet")))
    ids, labels = table.column("id").to_pylist(), np.asarray(table.column("label").to_pylist())
    key = np.array([zlib.crc32(i.encode()) for i in ids])
    rows = [
        r[np.argsort(key[r], kind="stable")][:per_class]
        for r in (np.flatnonzero(labels == c) for c in np.unique(labels))
    ]
    return table.take(pa.array(np.sort(np.concatenate(rows)))).select(["id", "label", "image"])


def source_dir(name: str) -> Path:
    """Parquet folder of a pool's images (the shared dataset, or built once into the cache)."""
    if name == "ucmerced":
        return DATASETS / "ucmerced"
    out = CACHE / f"selection-{name}-images"
    if not (out / "part-00000.parquet").exists():
        out.mkdir(parents=True, exist_ok=True)
        table = {"digits": digits_table, "shapes": shapes_table, "aid": aid_subset_table}[name]()
        pq.write_table(table, out / "part-00000.parquet.tmp")
        (out / "part-00000.parquet.tmp").rename(out / "part-00000.parquet")
    return out


def pool_embeddings(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, labels, (N, D) float32 embeddings) of a pool, embedded once with the default backbone."""
    from pipeline.config import with_defaults
    from pipeline.embed.stage import run_embed
    from pipeline.io.tables import read_embeddings
    from pipeline.rundir import RunDir

    run = RunDir(str(CACHE / f"selection-{name}"))
    if not run.exists("_markers", "embed.json"):
        embed_cfg = with_defaults("embed/efficientnet_lite0", {"engine": "local", "pool_size": 1, "num_threads": 2})
        run_embed(run, {"path": str(source_dir(name))}, embed_cfg)
    table, x = read_embeddings(run.path("embeddings"))
    table_ids = np.asarray(table.column("id").to_pylist())
    order = np.argsort(table_ids, kind="stable")
    return table_ids[order], np.asarray(table.column("label").to_pylist())[order], np.asarray(x, np.float32)[order]


# per pool: images per class held out for the balanced test set, Zipf exponent of the pool's class sizes
POOLS = {
    "ucmerced": {"test": 20, "alpha": 0.5},
    "aid": {"test": 20, "alpha": 0.5},
    "digits": {"test": 30, "alpha": 1.0},
    "shapes": {"test": 30, "alpha": 1.0},
}
BUDGETS = (1, 3, 10, 30)
UNIFORM = "uniform random"  # the baseline arm; "random" is the objective (random inside each level-1 cluster)
DEFAULT = "default (auto)"  # what conf/sampling/default.yaml runs
MAX_POOL_SHARE = 0.75  # a budget above this share of the pool leaves nothing to choose: reported n/a


@dataclass
class Pool:
    x: np.ndarray  # (n, D) pool embeddings
    y: np.ndarray  # (n,) class ids (hidden from the selection)
    x_test: np.ndarray
    y_test: np.ndarray
    sizes: np.ndarray  # (C,) pool images per class
    tail: np.ndarray  # the ceil(C/2) classes with the fewest pool images


def long_tailed_pool(name: str, ids: np.ndarray, labels: np.ndarray, x: np.ndarray) -> Pool:
    """Balanced test set (``test`` per class by ``crc32(id)``), then a pool of ``n_r = max(2, floor(m r^-alpha))``
    images for the class of rank r (seeded class order, m = the smallest class's remaining count)."""
    spec = POOLS[name]
    classes, y = np.unique(labels, return_inverse=True)
    key = np.array([zlib.crc32(i.encode()) for i in ids])
    by_class = [np.flatnonzero(y == c)[np.argsort(key[y == c], kind="stable")] for c in range(len(classes))]
    m = min(len(r) for r in by_class) - spec["test"]
    order = np.random.default_rng(0).permutation(len(classes))
    sizes = np.empty(len(classes), dtype=np.int64)
    sizes[order] = np.maximum(2, np.floor(m * np.arange(1, len(classes) + 1, dtype=float) ** -spec["alpha"]))
    test = np.concatenate([r[: spec["test"]] for r in by_class])
    pool = np.concatenate([r[spec["test"] : spec["test"] + s] for r, s in zip(by_class, sizes)])
    tail = np.argsort(sizes, kind="stable")[: (len(classes) + 1) // 2]
    return Pool(x[pool], y[pool], x[test], y[test], sizes, tail)


def probe(pool: Pool, picked: np.ndarray) -> tuple[float, float]:
    """(balanced accuracy, tail recall) in % of a logistic regression (C=1, L-BFGS) fitted on the
    picked pool images, features standardised with the pool's (unlabelled) mean and std: on the raw
    L2-normalised features C=1 regularises so hard that the probe predicts one class."""
    from sklearn.linear_model import LogisticRegression

    y = pool.y[picked]
    n_classes = len(pool.sizes)
    mu, sd = pool.x.mean(0), pool.x.std(0) + 1e-6
    if len(np.unique(y)) == 1:
        pred = np.full(len(pool.y_test), y[0])
    else:
        clf = LogisticRegression(C=1.0, max_iter=1000).fit((pool.x[picked] - mu) / sd, y)
        pred = clf.predict((pool.x_test - mu) / sd)
    hits = np.bincount(pool.y_test, weights=pred == pool.y_test, minlength=n_classes)
    recall = hits / np.bincount(pool.y_test, minlength=n_classes)
    return 100 * float(recall.mean()), 100 * float(recall[pool.tail].mean())


# arm -> the sample settings it runs (strategy, pick_level, allocation_power, budget_split); "top" = the top level
SELECTIONS: dict[str, dict] = {
    "closest": {"strategy": "closest", "pick_level": 1, "allocation_power": 0.0, "budget_split": None},
    "random (inside clusters)": {"strategy": "random", "pick_level": 1, "allocation_power": 0.0, "budget_split": None},
    "typical": {"strategy": "typical", "pick_level": 1, "allocation_power": 0.0, "budget_split": None},
    "coverage": {"strategy": "coverage", "pick_level": 1, "allocation_power": 0.0, "budget_split": None},
    "typical, top level": {"strategy": "typical", "pick_level": "top", "allocation_power": 0.0, "budget_split": None},
    "typical, budget clusters (TypiClust)": {
        "strategy": "typical",
        "pick_level": "budget",
        "allocation_power": 0.0,
        "budget_split": None,
    },
    "coverage, power 0.5": {"strategy": "coverage", "pick_level": 1, "allocation_power": 0.5, "budget_split": None},
    **{
        f"TypiClust split {m:g}": {
            "strategy": "typical",
            "pick_level": "budget",
            "allocation_power": 0.0,
            "budget_split": m,
        }
        for m in (1, 2, 4, 8)
    },
    "TypiClust split 1, power 0.5": {
        "strategy": "typical",
        "pick_level": "budget",
        "allocation_power": 0.5,
        "budget_split": 1,
    },
}
PREVIOUS = "previous default (session 10)"  # auto before session 11: TypiClust <= 5% of the pool, else coverage


def default_selection(n_items: int, total: int) -> dict:
    """What ``strata curate`` runs by default for ``total`` picks of ``n_items`` (conf/sampling/default.yaml)."""
    from pipeline.sampling.config import sampling_config
    from pipeline.sampling.objectives import resolve_selection

    return resolve_selection(sampling_config({"seed": 0}), total, n_items)


def previous_selection(n_items: int, total: int) -> dict:
    """Session 10's ``auto``: TypiClust over the whole pool while ``total`` <= 5% of it and <= 1024, else
    ``coverage`` in level-1 clusters, flat."""
    name = "typical, budget clusters (TypiClust)" if total <= min(0.05 * n_items, 1024) else "coverage"
    return SELECTIONS[name]


RESOLVED = {DEFAULT: default_selection, PREVIOUS: previous_selection}  # arms whose settings depend on the budget


def arm_picks(pool: Pool, budgets: list[int], seed: int, arms: list[str]) -> dict[str, dict[int, np.ndarray]]:
    """Per arm (``SELECTIONS`` names, plus ``RESOLVED``), per total budget: the picked pool rows (one
    k-means per seed, shared by the arms; a resolved arm reuses a listed arm's picks when it runs it)."""
    from pipeline.config import with_defaults
    from pipeline.kmeans.config import KMeansConfig
    from pipeline.kmeans.hierarchical import hierarchical_kmeans
    from pipeline.sampling.balanced import hierarchical_balanced_sampling
    from pipeline.sampling.config import sampling_config

    conf = sampling_config({"seed": 0})
    kcfg = KMeansConfig.from_dict(with_defaults("kmeans/default", {}), seed=seed, n_points=len(pool.x))
    levels = hierarchical_kmeans(pool.x.copy(), kcfg)
    out: dict[str, dict[int, np.ndarray]] = {}
    for b in budgets:
        specs = {name: SELECTIONS[name] for name in arms}
        specs.update({name: resolve(len(pool.x), b) for name, resolve in RESOLVED.items()})
        done: list[tuple[dict, np.ndarray]] = []
        for name, spec in specs.items():
            same = [idx for sp, idx in done if sp == spec]
            if same:
                out.setdefault(name, {})[b] = same[0]
                continue
            level = len(levels) if spec["pick_level"] == "top" else spec["pick_level"]
            sel = hierarchical_balanced_sampling(
                levels,
                b,
                strategy=spec["strategy"],
                multiplier=1,
                rng=seed,
                x=pool.x,
                settings=conf["typical"] if spec["strategy"] == "typical" else {},
                pick_level=level,
                allocation_power=spec["allocation_power"],
                budget_clusters={"split": spec["budget_split"], **conf["budget_kmeans"]},
            )
            done.append((spec, sel.indices))
            out.setdefault(name, {})[b] = sel.indices
    return out


def selection_label(spec: dict) -> str:
    level = {"budget": "budget clusters"}.get(spec["pick_level"], f"level {spec['pick_level']}")
    split = f", split {spec['budget_split']:g}" if spec["pick_level"] == "budget" and spec["budget_split"] else ""
    return f"{spec['strategy']}, {level}{split}, power {spec['allocation_power']:g}"


def kcenter_picks(pool: Pool, budgets: list[int]) -> dict[int, np.ndarray]:
    """``strata coreset`` (exact k-center greedy from the point farthest from the mean: seed-free)."""
    from pipeline.coreset.kcenter import k_center_greedy

    return {b: k_center_greedy(pool.x, b, start="farthest_from_mean", metric="l2", device="cpu")[0] for b in budgets}


def uniform_picks(pool: Pool, budgets: list[int], seed: int) -> dict[int, np.ndarray]:
    """The baseline: a uniformly random subset of the pool per budget."""
    rng = np.random.default_rng(seed)
    return {b: rng.choice(len(pool.x), b, replace=False) for b in budgets}


def evaluate(name: str, seeds: list[int], arms: list[str], kcenter: bool = True) -> dict:
    """Scores per arm and budget: uniform random, the ``arms`` of ``SELECTIONS``, the default
    (``default (auto)``: the arm it resolves to per budget) and, with ``kcenter``, the k-center coreset."""
    ids, labels, x = pool_embeddings(name)
    pool = long_tailed_pool(name, ids, labels, x)
    n_classes = len(pool.sizes)
    per_class = [b for b in BUDGETS if b * n_classes <= MAX_POOL_SHARE * len(pool.x)]
    totals = [b * n_classes for b in per_class]
    scores: dict[str, dict[int, list[tuple[float, float]]]] = {}
    for b, idx in (kcenter_picks(pool, totals) if kcenter else {}).items():  # seed-free: scored once
        scores.setdefault("k-center coreset", {})[b // n_classes] = [probe(pool, idx)]
    for i, seed in enumerate(seeds):
        picked = arm_picks(pool, totals, seed, arms)
        probed: dict[bytes, tuple[float, float]] = {}  # arms that picked the same rows share one probe fit
        for arm, by_budget in {UNIFORM: uniform_picks(pool, totals, seed), **picked}.items():
            for b, idx in by_budget.items():
                key = np.sort(idx).tobytes()
                probed[key] = probed[key] if key in probed else probe(pool, idx)
                scores.setdefault(arm, {}).setdefault(b // n_classes, []).append(probed[key])
        print(f"  {name}: seed {seed} done ({i + 1}/{len(seeds)})", flush=True)
    default_runs = {b // n_classes: selection_label(default_selection(len(pool.x), b)) for b in totals}
    return {
        "pool": name,
        "pool_size": int(len(pool.x)),
        "classes": n_classes,
        "class_sizes": sorted(pool.sizes.tolist(), reverse=True),
        "test_size": int(len(pool.x_test)),
        "budgets_per_class": per_class,
        "skipped_per_class": [b for b in BUDGETS if b not in per_class],
        "seeds": list(seeds),
        "default_runs": default_runs,
        "arms": summarise(scores),
    }


def summarise(scores: dict[str, dict[int, list]]) -> dict:
    """Per arm and budget: mean and std over the runs of balanced accuracy and tail recall, and the runs."""
    return {
        arm: {
            b: {
                "bacc": float(np.mean([s[0] for s in v])),
                "bacc_std": float(np.std([s[0] for s in v])),
                "tail": float(np.mean([s[1] for s in v])),
                "tail_std": float(np.std([s[1] for s in v])),
                "runs": [list(s) for s in v],
            }
            for b, v in by_b.items()
        }
        for arm, by_b in scores.items()
    }


def merge_arms(results: list[dict]) -> list[dict]:
    """Runs over the same seeds with different ``--arms`` joined into one (an arm both ran, e.g. uniform
    random, must have the same scores: same seed, same picks)."""
    by_seeds: dict[tuple, dict] = {}
    for r in results:
        key = tuple(r["seeds"])
        if key not in by_seeds:
            by_seeds[key] = {**r, "arms": dict(r["arms"])}
            continue
        arms = by_seeds[key]["arms"]
        for arm, v in r["arms"].items():
            if arm in arms and arm != DEFAULT and arms[arm] != v:
                raise ValueError(f"{r['pool']}: arm {arm!r} scored differently in two runs of the same seeds")
            arms.setdefault(arm, v)
    return list(by_seeds.values())


def combine(results: list[dict]) -> dict:
    """One pool's result from runs over disjoint seeds (``--seed-start``): the runs of every arm joined
    (a seed-free arm, the k-center coreset, kept once). ``default (auto)`` is what the config resolves to
    *now*: per budget the runs of the measured arm with the same settings (same seed, same picks), else
    the runs' own default arm if it ran the same settings; otherwise an error (stale default)."""
    results = merge_arms(results)
    out = {**results[0], "seeds": sorted(s for r in results for s in r["seeds"])}
    if len(set(out["seeds"])) != len(out["seeds"]):
        raise ValueError(f"{out['pool']}: the runs to combine share seeds")
    scores: dict[str, dict[int, list]] = {}
    for r in results:
        for arm, by_b in r["arms"].items():
            for b, v in by_b.items():
                runs = scores.setdefault(arm, {}).setdefault(int(b), [])
                if not (arm == "k-center coreset" and runs):
                    runs.extend(v["runs"])
    ran = {int(b): v for r in results for b, v in r["default_runs"].items()}
    default: dict[int, list] = {}
    for b in out["budgets_per_class"]:
        spec = default_selection(out["pool_size"], b * out["classes"])
        same = [n for n, sel in SELECTIONS.items() if sel == spec and b in scores.get(n, {})]
        if same:
            default[b] = scores[same[0]][b]
        elif all(
            r["default_runs"][str(b) if str(b) in r["default_runs"] else b] == selection_label(spec) for r in results
        ):
            default[b] = scores[DEFAULT][b]
        else:
            raise ValueError(f"{out['pool']}: no measured arm runs today's default at {b}/class ({ran[b]} was run)")
    scores[DEFAULT] = default
    out["default_runs"] = {
        b: selection_label(default_selection(out["pool_size"], b * out["classes"])) for b in out["budgets_per_class"]
    }
    out["arms"] = summarise(scores)
    return out


def print_markdown(res: dict) -> None:
    print(
        f"\n#### {res['pool']}: pool {res['pool_size']} images, {res['classes']} classes "
        f"(sizes {res['class_sizes'][0]}..{res['class_sizes'][-1]}), test {res['test_size']}, {len(res['seeds'])} seeds"
    )
    b_all = res["budgets_per_class"]
    print(
        "| arm | "
        + " | ".join(f"{b}/class bal. acc" for b in b_all)
        + " | "
        + " | ".join(f"{b}/class tail" for b in b_all)
        + " |"
    )
    print("|---" * (1 + 2 * len(b_all)) + "|")
    rnd = res["arms"][UNIFORM]
    for arm, by_b in res["arms"].items():
        cells = [
            f"{by_b[b]['bacc']:.1f} +- {by_b[b]['bacc_std']:.1f}"
            + ("" if arm == UNIFORM else f" ({by_b[b]['bacc'] - rnd[b]['bacc']:+.1f})")
            for b in b_all
        ]
        if arm == DEFAULT:
            cells = [f"{c} [{res['default_runs'][b]}]" for c, b in zip(cells, b_all)]
        tails = [f"{by_b[b]['tail']:.1f} +- {by_b[b]['tail_std']:.1f}" for b in b_all]
        print(f"| {arm} | " + " | ".join(cells) + " | " + " | ".join(tails) + " |")
    if res["skipped_per_class"]:
        print(f"n/a: {res['skipped_per_class']} per class exceed {MAX_POOL_SHARE:.0%} of the pool.")


SSL_COMMAND = (
    "for s in closest random typical coverage; do .venv/bin/python -m benchmarks.curation_downstream "
    "--seeds 3 --strategy $s --max-class 420 --image-size 128 --seen 65536 --out benchmarks/.cache/downstream-$s; done"
    "  # dirty AID pool (re-encoded copies in 3 head classes), SimCLR per arm: curated / random / whole pool"
)


def time_selection(n: int, target: int, top: int = 0, dim: int = 128, per_cluster: int = 5) -> tuple[float, dict]:
    """Seconds of the default selection (``auto`` resolved for ``target`` of n) over n random points
    in a random 2-level hierarchy (~``per_cluster`` points per level-1 cluster, 5 children per
    level-2 cluster, as k-means ``auto`` gives; with ``top`` > 0 a third level of ``top`` clusters,
    so that a budget split keeps its level at every n): for growth.py."""
    from pipeline.kmeans.hierarchical import LevelResult
    from pipeline.sampling.balanced import hierarchical_balanced_sampling
    from pipeline.sampling.config import sampling_config

    rng = np.random.default_rng(0)
    levels, items = [], n
    for k in (max(1, n // per_cluster), max(1, n // per_cluster // 5), *([top] if top else [])):
        assign = np.r_[np.arange(k), rng.integers(k, size=items - k)]
        levels.append(LevelResult.from_assignments(np.zeros((k, 1), np.float32), assign, rng.random(items)))
        items = k
    x = rng.normal(size=(n, dim)).astype(np.float32)
    spec = default_selection(n, target)
    conf = sampling_config({"seed": 0})
    import faiss  # noqa: F401  (imports outside the timing)
    import torch  # noqa: F401

    t0 = time.perf_counter()
    hierarchical_balanced_sampling(
        levels,
        target,
        strategy=spec["strategy"],
        multiplier=1,
        rng=0,
        x=x,
        settings=conf["typical"] if spec["strategy"] == "typical" else {},
        pick_level=spec["pick_level"],
        allocation_power=spec["allocation_power"],
        budget_clusters={"split": spec["budget_split"], **conf["budget_kmeans"]},
    )
    return time.perf_counter() - t0, spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pools", nargs="+", default=list(POOLS), choices=list(POOLS))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--seed-start", type=int, default=0, help="first seed (split the seeds over processes)")
    ap.add_argument("--out", default=str(CACHE / "selection_downstream.json"))
    ap.add_argument("--ssl", action="store_true", help="print the SSL-regime command for a GPU machine and exit")
    ap.add_argument("--time-selection", action="store_true", help="time the default selection on --n points, exit")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--target", type=float, default=500, help="--time-selection: picks (a fraction of n if < 1)")
    ap.add_argument("--top", type=int, default=0, help="--time-selection: a third level of this many clusters")
    ap.add_argument("--arms", nargs="+", default=list(SELECTIONS), choices=list(SELECTIONS), metavar="ARM")
    ap.add_argument("--no-kcenter", action="store_true", help="skip the (seed-free) k-center coreset arm")
    ap.add_argument("--combine", nargs="+", help="--out files of one pool over disjoint seeds: join and print")
    args = ap.parse_args()
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)  # 2 shared cores: threads only contend (a probe fit: 6 s -> 0.5 s)
    threadpool_limits(1)
    if args.ssl:
        print(SSL_COMMAND)
        return
    if args.time_selection:
        target = int(args.target * args.n) if args.target < 1 else int(args.target)
        seconds, spec = time_selection(args.n, target, args.top)
        print(f"default selection n={args.n} target={target} ({selection_label(spec)}): {seconds:.2f} s")
        return
    t0 = time.time()
    if args.combine:
        runs = [r for path in args.combine for r in json.loads(Path(path).read_text())["results"]]
        results = [combine([r for r in runs if r["pool"] == p]) for p in dict.fromkeys(r["pool"] for r in runs)]
    else:
        seeds = list(range(args.seed_start, args.seed_start + args.seeds))
        results = [evaluate(name, seeds, args.arms, not args.no_kcenter) for name in args.pools]
    for res in results:
        print_markdown(res)
    meta = {"machine": machine(), "seconds": round(time.time() - t0, 1), "date": time.strftime("%Y-%m-%d")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(f"\n{meta}")


if __name__ == "__main__":
    main()
