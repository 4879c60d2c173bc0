"""Cost plan of copy detection (``strata plan``): candidate pairs and predicted time from N alone.

The model follows :mod:`pipeline.dedup.candidates` and :mod:`pipeline.dedup.copies` term by term
(N images, 8 symmetries, D = 64):

- hash bands: radius ``r`` = :func:`pipeline.dedup.candidates.band_radius`, ``m = r + 1`` bands;
  joined pairs ``J = 8 N m min(N / 2^(64/m), max_bucket)``, ``JOIN_S`` seconds per joined pair on
  one CPU; on Ray the ``m`` bands run as parallel tasks;
- descriptor kNN: flat ``8 N^2 D`` flops up to ``flat_max``; else IVF, ``nlist`` =
  :func:`pipeline.dedup.candidates.ivf_lists` (``N / list_size``) found through an HNSW graph
  (``E = 2 M ef`` distance evaluations per search, ``2 M 40`` per insertion): training
  ``2 train_iters (T E + nlist 80 M) D`` (``T`` = ``train_per_list nlist`` rows) plus queries
  ``8 N (E + nprobe list_size) D``, at ``FLOPS``
  per CPU; the training runs in the driver on one node's CPUs, the queries in process on those too,
  on Ray in shards over the cluster's;
- verification: ``P = PAIRS_PER_IMAGE N`` candidate pairs, ``DIRECT_S`` each, plus ``REGISTER_S``
  for the share ``registered`` of them that is registered (crops), on one CPU (numpy) in process,
  in shards of pairs over the cluster's CPUs on Ray.

The constants were fitted to ``benchmarks/copy_detection.py scale`` on the 2-core development VM
while five other engineers' jobs loaded it (load average 17-22): a quiet machine is faster
(BENCHMARKS.md, "Issue 27 (scale)"). ``registered`` = 2.5% was measured on the scale benchmark's
synthetic collection (10% copies).
"""

from __future__ import annotations

from pipeline.dedup.candidates import HNSW_M, band_radius, ivf_lists, quantizer_ef

# fitted at 25k and 50k images under load 17-22 on the 2-core VM (BENCHMARKS.md, issue 27 scale)
SIG_S = 2.0e-4  # seconds per image: d4_phash + descriptors (the embed step pays it; not refitted)
JOIN_S = 2.4e-7  # seconds per joined pair (64-bit check, numpy, one CPU): 1.7e-7 / 3.0e-7 measured
FLOPS = 0.87e9  # IVF flops (training + coarse quantizer + list scan) per second per CPU: 0.95e9 / 0.80e9
PAIRS_PER_IMAGE = 4.2  # unique candidate pairs per image at neighbours = 5 with the IVF: 4.11 / 4.21
DIRECT_S = 1.26e-4  # seconds per pair: direct scores (8 symmetries, residual): 1.20e-4 / 1.32e-4
REGISTER_S = 6.4e-3  # seconds per registered pair (windows of both grids, both ways): 5.8e-3 / 7.1e-3


def plan_copies(n: int, cfg: dict, cpus: float, nodes: int = 1, registered: float = 0.025) -> dict:
    """Predicted pairs and seconds of each phase for ``n`` images, ``cfg`` = ``dedup.copies``,
    ``nodes`` nodes of ``cpus`` CPUs; ``registered``: share of pairs registered."""
    from pipeline.engine import choose_engine

    engine = "ray" if nodes > 1 else choose_engine(str(cfg["engine"]), n, int(cfg["local_max_images"]), what="plan")
    node_cpus = max(float(cpus), 1.0)
    cluster = node_cpus * max(int(nodes), 1) if engine == "ray" else node_cpus
    radius = band_radius(n, int(cfg["max_radius"]), int(cfg["bucket_size"]))
    bands = radius + 1
    bucket = min(n / 2 ** (64 / bands), int(cfg["max_bucket"]))
    joined = 8 * n * bands * bucket
    dim = 64
    if n <= int(cfg["flat_max"]):
        train_flops, knn_flops, index = 0.0, 8.0 * n * n * dim, "flat"
    else:
        nprobe = int(cfg["nprobe"])
        list_size = int(cfg["list_size"])
        nlist = ivf_lists(n, list_size)
        train = min(n, int(cfg["train_per_list"]) * nlist)
        evals = 2 * HNSW_M * quantizer_ef(nprobe)  # per HNSW search of the list centroids
        train_flops = 2.0 * int(cfg["train_iters"]) * (train * evals + nlist * 80 * HNSW_M) * dim  # in the driver
        knn_flops = 8.0 * n * (evals + nprobe * min(list_size, n)) * dim
        index = f"ivf nlist={nlist} nprobe={nprobe}"
    pairs = PAIRS_PER_IMAGE * n
    phases = {
        "signatures_s": n * SIG_S / node_cpus,
        "hash_bands_s": joined * JOIN_S / (min(bands, cluster) if engine == "ray" else 1),
        "descriptor_knn_s": train_flops / (FLOPS * node_cpus) + knn_flops / (FLOPS * cluster),
        "verify_s": pairs * (DIRECT_S + registered * REGISTER_S) / (cluster if engine == "ray" else 1),
    }
    return {
        "n": n,
        "engine": engine,
        "cpus": cluster,
        "radius": radius,
        "bands": bands,
        "bucket": bucket,
        "joined_pairs": joined,
        "index": index,
        "pairs": pairs,
        **phases,
        "search_verify_s": phases["hash_bands_s"] + phases["descriptor_knn_s"] + phases["verify_s"],
        "total_s": sum(phases.values()),
    }


def format_copies_plan(p: dict) -> str:
    """One paragraph: the plan of :func:`plan_copies`."""
    where = f"Ray tasks over {p['cpus']:.0f} CPUs" if p["engine"] == "ray" else "in process"
    return (
        f"copy detection plan: N={p['n']:,}: hash bands r={p['radius']} ({p['bands']} bands, ~{p['bucket']:.0f} per bucket, "
        f"{p['joined_pairs']:.3g} joined pairs) {p['hash_bands_s']:.0f} s; descriptor kNN {p['index']} "
        f"{p['descriptor_knn_s']:.0f} s ({where}); verification of {p['pairs']:.3g} pairs {p['verify_s']:.0f} s "
        f"({where}); signatures {p['signatures_s']:.0f} s (embed step); "
        f"search + verification {p['search_verify_s'] / 60:.1f} min, total {p['total_s'] / 3600:.2f} h"
    )
