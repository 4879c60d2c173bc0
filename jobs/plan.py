"""strata plan: capacity plan of hierarchical k-means before a run (no Ray started).

From N and D (input.path's embeddings, run_dir's embeddings, or plan.n / plan.dim), k per level
(kmeans.*) and the resources (the Ray cluster at ray.address, else plan.nodes / cpus / gpus /
memory_gb), prints memory per shard actor, actors and predicted time per level, and one warning
line per problem. Throughputs: a few-second calibration, stored in plan.calibration.
"""

from __future__ import annotations

import os

from omegaconf import DictConfig

from jobs._common import strata_job
from jobs._config import to_dict


@strata_job(
    "plan",
    main_keys=(
        "input.path",
        "plan.n",
        "plan.dim",
        "kmeans.n_clusters",
        "kmeans.use_gpu",
        "kmeans.memory_budget_mb",
        "plan.nodes",
        "plan.cpus",
        "plan.gpus",
        "plan.memory_gb",
        "plan.calibration",
        "ray.address",
    ),
)
def main(cfg: DictConfig) -> None:
    from pipeline.kmeans.config import KMeansConfig
    from pipeline.kmeans.plan import DEFAULT_CALIBRATION, format_plan, load_calibration, plan_kmeans

    n, dim = plan_size(cfg)
    kc = KMeansConfig.from_dict(to_dict(cfg.kmeans), seed=int(cfg.seed), n_points=n)
    cal, fresh = load_calibration(cfg.plan.calibration or DEFAULT_CALIBRATION, dim, bool(cfg.plan.recalibrate))
    if fresh:
        print(f"calibrated at D={dim} (stored in {cfg.plan.calibration or DEFAULT_CALIBRATION})")
    res = plan_resources(cfg)
    print(format_plan(plan_kmeans(kc, n, dim, res, cal), cal))
    from pipeline.dedup.config import dedup_config
    from pipeline.dedup.plan import format_copies_plan, plan_copies

    copies = dedup_config({})["copies"]  # dedup's default copy detection
    print(format_copies_plan(plan_copies(n, copies, res.cpus, res.nodes)))


def plan_size(cfg: DictConfig) -> tuple[int, int]:
    """(N, D): plan.n / plan.dim where given, the rest from input.path or run_dir's embeddings."""
    from pipeline.kmeans.plan import input_size

    n, dim = cfg.plan.n, cfg.plan.dim
    if n is None or dim is None:
        if cfg.input.path:
            path, column = str(cfg.input.path), str(cfg.input.embedding_column)
        else:
            from pipeline.artifacts import EMBEDDINGS
            from pipeline.rundir import RunDir

            run = RunDir(str(cfg.run_dir))
            if not run.has(EMBEDDINGS):
                raise ValueError(
                    "strata plan needs plan.n and plan.dim, input.path=<embeddings>, or a run_dir with embeddings"
                )
            path, column = run.path(EMBEDDINGS), "embedding"
        got = input_size(path, column)
        n, dim = n if n is not None else got[0], dim if dim is not None else got[1]
    if int(n) < 1 or int(dim) < 1:
        raise ValueError(f"plan.n and plan.dim must be >= 1, got n={n} dim={dim}")
    return int(n), int(dim)


def plan_resources(cfg: DictConfig):
    """The connected cluster's resources with ray.address / RAY_ADDRESS, else plan.* (this machine's by default)."""
    from pipeline.kmeans.plan import Resources

    if cfg.ray.address or os.environ.get("RAY_ADDRESS"):
        from jobs._ray import init_ray

        init_ray(cfg)
        return Resources.from_ray()
    here = Resources.this_machine()
    p = cfg.plan
    return Resources(
        int(p.nodes),
        float(p.cpus if p.cpus is not None else here.cpus),
        float(p.gpus),
        float(p.memory_gb if p.memory_gb is not None else here.memory_gb),
        "given" if any(v is not None for v in (p.cpus, p.memory_gb)) or p.nodes != 1 or p.gpus else "this machine",
    )


if __name__ == "__main__":
    main()
