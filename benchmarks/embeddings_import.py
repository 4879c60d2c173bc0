"""Throughput of ``input.format=embeddings``: the import step (check, convert to float32, reject
NaN rows, write ``embeddings/``) on a synthetic table, and ``strata export format=jsonl`` of it.

    .venv/bin/python -m benchmarks.embeddings_import --rows 200000 --dim 384
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import load_group
from pipeline.embed.imported import import_embeddings
from pipeline.rundir import RunDir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=384)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for kind, vec_type in (
            ("float16 variable list", pa.list_(pa.float16())),
            ("float32 fixed list", pa.list_(pa.float32(), args.dim)),
        ):
            x = rng.normal(size=(args.rows, args.dim)).astype(np.float32)
            flat = pa.array(x.reshape(-1).astype(vec_type.value_type.to_pandas_dtype()))
            offsets = pa.array(np.arange(0, args.rows * args.dim + 1, args.dim, dtype=np.int32))
            vec = (
                pa.ListArray.from_arrays(offsets, flat)
                if not pa.types.is_fixed_size_list(vec_type)
                else pa.FixedSizeListArray.from_arrays(flat, args.dim)
            )
            table = pa.table(
                {
                    "doc_id": pa.array(np.arange(args.rows, dtype=np.int64)),
                    "vector": vec,
                    "lang": pa.array(["en"] * args.rows),
                }
            )
            path = root / f"{kind.replace(' ', '_')}.parquet"
            pq.write_table(table, path)
            cfg = {
                **load_group("input/default"),
                "path": str(path),
                "format": "embeddings",
                "id_column": "doc_id",
                "embedding_column": "vector",
            }
            t0 = time.perf_counter()
            counts = import_embeddings(RunDir(str(root / f"run-{path.stem}")), cfg)
            seconds = time.perf_counter() - t0
            mb = path.stat().st_size / 1e6
            print(
                f"| {kind} | {args.rows:,} x {args.dim} | {mb:.0f} | {seconds:.2f} | {counts['kept'] / seconds:,.0f} |"
            )


if __name__ == "__main__":
    main()
