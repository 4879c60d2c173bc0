"""strata search: query a run's index from the command line by image file, id or vector; print the
hits and optionally save them.

Reads run_dir/index (build it with `strata index`). Writes output= (.parquet or .json) when given.
"""

from __future__ import annotations

import json
import logging

from omegaconf import DictConfig

from jobs._common import strata_job
from jobs._config import to_dict
from pipeline.artifacts import INDEX

log = logging.getLogger("strata.search")


def format_table(results: list[dict], width: int = 48) -> str:
    """Plain-text table of search results (rank, score, id, carried columns)."""
    if not results:
        return "(no results)"
    columns = ["rank", "score", "id", *[c for c in results[0] if c not in ("rank", "score", "id")]]

    def cell(value) -> str:
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        return text if len(text) <= width else text[: width - 1] + "~"

    rows = [[cell(r.get(c)) for c in columns] for r in results]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


@strata_job(
    "search",
    requires=[INDEX],
    main_keys=("run_dir", "query.image", "query.id", "query.k", "query.filters", "query.tiles", "output"),
)
def main(cfg: DictConfig) -> None:
    import faiss
    import fsspec
    import pyarrow as pa

    from pipeline.io.tables import write_parquet_atomic
    from pipeline.search.service import SearchService

    if cfg.faiss_threads:
        faiss.omp_set_num_threads(int(cfg.faiss_threads))
    q = to_dict(cfg.query)
    service = SearchService.from_run(str(cfg.run_dir), nprobe=cfg.nprobe, ef_search=cfg.ef_search, use_gpu=cfg.use_gpu)
    image = None
    if q.get("image"):
        with fsspec.open(q["image"], "rb") as fh:
            image = fh.read()
    out = service.search(
        image=image,
        id=q.get("id"),
        vector=q.get("vector"),
        k=q["k"],
        filters=q.get("filters") or None,
        tiles=q.get("tiles"),
        per_tile_k=q.get("per_tile_k"),
    )
    print(format_table(out["results"]))
    print(f"({len(out['results'])} results in {out['took_ms']:.1f} ms)")
    if cfg.output:
        path = str(cfg.output)
        if path.endswith(".parquet"):
            write_parquet_atomic(pa.Table.from_pylist(out["results"]), path)
        else:
            with fsspec.open(path, "w") as fh:
                json.dump(out, fh, indent=2, default=str)
        log.info("results written to %s", path)


if __name__ == "__main__":
    main()
