"""``coreset``: k-center greedy (``pipeline.coreset.kcenter.k_center_greedy``, cosine distance) among the
candidates, counting the already-labeled images as centres when given."""

from __future__ import annotations

import numpy as np

from pipeline.active.diversity import DiversitySettings, register


def coreset(x: np.ndarray, u: np.ndarray, k: int, labeled_x: np.ndarray | None) -> np.ndarray:
    """k-center greedy among the candidates; starts at the top priority when nothing is labeled."""
    from pipeline.coreset.kcenter import k_center_greedy

    m = len(u)
    if labeled_x is not None and len(labeled_x):
        allx = np.concatenate([np.asarray(x, np.float32), np.asarray(labeled_x, np.float32)])
        picks, _ = k_center_greedy(allx, k, already_selected=np.arange(m, len(allx)), metric="cosine", device="cpu")
    else:
        picks, _ = k_center_greedy(np.asarray(x, np.float32), k, start=int(np.argmax(u)), metric="cosine", device="cpu")
    return picks


@register("coreset")
def coreset_method(
    x: np.ndarray, u: np.ndarray, k: int, labeled_x: np.ndarray | None, seed: int, cfg: DiversitySettings
) -> np.ndarray:
    return coreset(x, u, k, labeled_x)
