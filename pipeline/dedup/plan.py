"""Cost plan of copy detection (``strata plan``): candidate pairs and predicted time from N alone.

The model follows :mod:`pipeline.dedup.copies` term by term (N images, 8 symmetries, D = 64):

- signatures: D4 pHash + block descriptors, ``SIG_S`` seconds per image;
- hash bands: radius ``r`` = :func:`pipeline.dedup.copies.band_radius`, ``m = r + 1`` bands; joined
  pairs ``8 N m min(N / 2^(64/m), max_bucket)``, ``JOIN_S`` seconds per joined pair;
- descriptor kNN: flat ``8 N^2 D`` flops up to ``flat_max``, else IVF ``8 N (nlist + nprobe N / nlist) D``
  with ``nlist = sqrt(N)`` (:func:`pipeline.dedup.copies.descriptor_pairs`), at ``FLOPS`` per CPU;
- verification: ``N neighbours`` pairs, ``DIRECT_S`` each, plus ``REGISTER_S`` for the share
  ``registered`` that is registered (crops).

The constants are rough estimates for the 2-core development VM (BENCHMARKS.md, issue 27: not yet
validated by a timing under the benchmark lock) and
are per CPU; the step runs in one process (FAISS and BLAS threads), so the plan divides by one
node's CPUs, not the cluster's.
"""

from __future__ import annotations

import math

from pipeline.dedup.copies import band_radius

SIG_S = 2.0e-4  # seconds per image: d4_phash + descriptors (rough estimates, not yet validated by a locked timing)
JOIN_S = 6.0e-8  # seconds per joined pair (64-bit check, numpy)
FLOPS = 4.0e9  # inner-product flops per second per CPU (FAISS)
DIRECT_S = 1.5e-5  # seconds per pair: direct scores
REGISTER_S = 1.5e-3  # seconds per registered pair (windows of one image, 81 x 8 correlations)


def plan_copies(n: int, cfg: dict, cpus: float, registered: float = 0.05) -> dict:
    """Predicted pairs and seconds of each phase for ``n`` images, ``cfg`` = ``dedup.copies``."""
    radius = band_radius(n, int(cfg["max_radius"]), int(cfg["bucket_size"]))
    bands = radius + 1
    bucket = min(n / 2 ** (64 / bands), int(cfg["max_bucket"]))
    joined = 8 * n * bands * bucket
    dim = 64
    if n <= int(cfg["flat_max"]):
        knn_flops, index = 8.0 * n * n * dim, "flat"
    else:
        nlist = max(1, round(math.sqrt(n)))
        knn_flops, index = 8.0 * n * (nlist + int(cfg["nprobe"]) * n / nlist) * dim, f"ivf nlist={nlist}"
    pairs = n * int(cfg["neighbours"])
    cpus = max(float(cpus), 1.0)
    phases = {
        "signatures_s": n * SIG_S / cpus,
        "hash_bands_s": joined * JOIN_S,
        "descriptor_knn_s": knn_flops / (FLOPS * cpus),
        "verify_s": pairs * (DIRECT_S + registered * REGISTER_S) / cpus,
    }
    return {
        "n": n,
        "radius": radius,
        "bands": bands,
        "bucket": bucket,
        "joined_pairs": joined,
        "index": index,
        "pairs": pairs,
        **phases,
        "total_s": sum(phases.values()),
    }


def format_copies_plan(p: dict) -> str:
    """One paragraph: the plan of :func:`plan_copies`."""
    return (
        f"copy detection plan: N={p['n']:,}: hash bands r={p['radius']} ({p['bands']} bands, ~{p['bucket']:.0f} per bucket, "
        f"{p['joined_pairs']:.3g} joined pairs) {p['hash_bands_s']:.0f} s; descriptor kNN {p['index']} "
        f"{p['descriptor_knn_s']:.0f} s; verification of {p['pairs']:.3g} pairs {p['verify_s']:.0f} s; "
        f"signatures {p['signatures_s']:.0f} s; total {p['total_s'] / 3600:.2f} h (one process)"
    )
