"""Load test of the swipe labeler: N simulated labelers over HTTP on loopback until the queue is empty.

Each labeler loops: ``POST /api/next`` (lease 4), then per image ``GET /api/image`` (unless
``--no-images``) and ``POST /api/label`` with a fresh request_id, with no think time. The server
runs as a separate process (``serve(subprocess=True)``) on real UC Merced images written as files.
Reports labels/s and latency percentiles, and checks the store afterwards: every acknowledged label
recorded exactly once, every queued image labeled once, nothing lost.

``--mode grid``: each labeler instead loops ``POST /api/page`` (a page of ``--grid-size`` images
ranked by cosine similarity over 1,280-d embeddings, as a run's embeddings would), fetches the
page's images, flips every 4th guess and sends the page with one ``POST /api/page/label``.

    .venv/bin/python benchmarks/labeler_load.py --labelers 20 --images 2100 [--mode grid]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.io.tables import embeddings_to_arrow, write_parquet_atomic  # noqa: E402
from pipeline.labeler import LabelerSettings, LabelStore, serve  # noqa: E402

LABELS = ("positive", "negative", "unsure")
RETRIES: list[str] = []  # image GETs retried after the server closed a kept-alive connection
DATASETS = Path(os.environ.get("STRATA_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"))


def write_images(root: Path, limit: int) -> tuple[list[str], list[str]]:
    """Up to ``limit`` UC Merced images as JPEG files under ``root``: (ids, paths)."""
    ids, paths = [], []
    for part in sorted((DATASETS / "ucmerced").glob("part-*.parquet")):
        table = pq.read_table(part, columns=["id", "image"])
        for item_id, data in zip(table.column("id").to_pylist(), table.column("image").to_pylist()):
            if len(ids) >= limit:
                return ids, paths
            path = root / (item_id.rsplit(".", 1)[0] + ".jpg")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            ids.append(item_id)
            paths.append(str(path))
    return ids, paths


async def labeler(name: str, url: str, fetch_images: bool, lat: dict[str, list[float]], acked: dict[str, str]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        while True:
            t0 = time.perf_counter()
            r = await http.post("/api/next", json={"annotator": name, "n": 4})
            lat["next"].append(time.perf_counter() - t0)
            r.raise_for_status()
            ids = [x["id"] for x in r.json()["items"]]
            if not ids:
                return
            for item_id in ids:
                if fetch_images:
                    t0 = time.perf_counter()
                    r = await http.get("/api/image", params={"id": item_id})
                    lat["image"].append(time.perf_counter() - t0)
                    r.raise_for_status()
                rid = uuid.uuid4().hex
                body = {"annotator": name, "id": item_id, "label": LABELS[len(acked) % 3], "request_id": rid}
                t0 = time.perf_counter()
                r = await http.post("/api/label", json=body)
                lat["label"].append(time.perf_counter() - t0)
                r.raise_for_status()
                acked[rid] = item_id


async def grid_labeler(
    name: str, url: str, fetch_images: bool, lat: dict[str, list[float]], acked: dict[str, str]
) -> None:
    """One grid labeler: page, images, flip every 4th guess, confirm; ``acked`` maps page:k -> id.

    Like a browser: at most 6 connections to the server, and an image GET whose kept-alive
    connection the server closed meanwhile (uvicorn closes idle ones after 5 s) is retried once.
    """
    limits = httpx.Limits(max_connections=6, max_keepalive_connections=6)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:

        async def image(item_id: str) -> None:
            for attempt in range(2):
                try:
                    (await http.get("/api/image", params={"id": item_id})).raise_for_status()
                    return
                except (httpx.RemoteProtocolError, httpx.ReadError):
                    if attempt:
                        raise
                    RETRIES.append(item_id)

        while True:
            t0 = time.perf_counter()
            r = await http.post("/api/page", json={"annotator": name})
            lat["page"].append(time.perf_counter() - t0)
            r.raise_for_status()
            items = r.json()["items"]
            if not items:
                return
            if fetch_images:
                t0 = time.perf_counter()
                await asyncio.gather(*(image(x["id"]) for x in items))
                lat["page_images"].append(time.perf_counter() - t0)
            labels = {x["id"]: ("negative" if k % 4 == 3 else x["guess"]) for k, x in enumerate(items)}
            rid = uuid.uuid4().hex
            t0 = time.perf_counter()
            r = await http.post("/api/page/label", json={"annotator": name, "labels": labels, "request_id": rid})
            lat["page_label"].append(time.perf_counter() - t0)
            r.raise_for_status()
            acked.update({f"{rid}:{item_id}": item_id for item_id in labels})


def write_embeddings(run_dir: Path, ids: list[str], paths: list[str], dim: int = 1280) -> None:
    """Random unit vectors as the run's embeddings: the ranking cost does not depend on their values."""
    x = np.random.default_rng(0).normal(size=(len(ids), dim)).astype(np.float32)
    table = pa.table({"id": ids, "uri": paths, "embedding": embeddings_to_arrow(x)})
    write_parquet_atomic(table, str(run_dir / "embeddings" / "part-00000.parquet"))


def check(store_path: str, ids: list[str], acked: dict[str, str]) -> dict[str, int]:
    """Lost / duplicated labels: compare what clients were told with the event log."""
    events = LabelStore(store_path).events()
    by_request = {e.request_id or f"{e.page}:{e.id}": e.id for e in events}
    labeled = [e.id for e in events]
    return {
        "events": len(events),
        "acked": len(acked),
        "lost": sum(1 for rid, item_id in acked.items() if by_request.get(rid) != item_id),
        "duplicated": len(labeled) - len(set(labeled)),
        "unlabeled": len(set(ids) - set(labeled)),
    }


def run_once(
    n_labelers: int,
    ids: list[str],
    paths: list[str],
    fetch_images: bool,
    synchronous: str,
    tmp: Path,
    mode: str = "single",
    grid_size: int = 12,
) -> dict:
    db = tmp / f"labels-{synchronous}-{uuid.uuid4().hex[:6]}.sqlite"
    store = LabelStore(db, synchronous=synchronous)
    store.register(ids, paths)
    store.enqueue(ids)
    lat: dict[str, list[float]] = {
        "next": [],
        "image": [],
        "label": [],
        "page": [],
        "page_images": [],
        "page_label": [],
    }
    acked: dict[str, str] = {}
    settings = None
    if mode == "grid":
        write_embeddings(tmp / "run", ids, paths)
        settings = LabelerSettings(mode="grid", grid_size=grid_size, neighbours_from=str(tmp / "run"))
    worker = grid_labeler if mode == "grid" else labeler
    with serve(db, subprocess=True, synchronous=synchronous, settings=settings, port=0) as server:

        async def main() -> None:
            await asyncio.gather(
                *(worker(f"sim{k:02d}", server.url, fetch_images, lat, acked) for k in range(n_labelers))
            )

        t0 = time.perf_counter()
        asyncio.run(main())
        wall = time.perf_counter() - t0
    result = {
        "labelers": n_labelers,
        "mode": mode if mode == "single" else f"grid{grid_size}",
        "images": len(ids),
        "fetch_images": fetch_images,
        "synchronous": synchronous,
        "wall_s": round(wall, 2),
        "labels_per_s": round(len(acked) / wall, 1),
        "image_retries": len(RETRIES),
        **({"pages_per_s": round(len(lat["page_label"]) / wall, 2)} if mode == "grid" else {}),
        **check(str(db), ids, acked),
    }
    for kind, xs in lat.items():
        if xs:
            ms = np.asarray(xs) * 1e3
            result[f"{kind}_p50_ms"] = round(float(np.percentile(ms, 50)), 1)
            result[f"{kind}_p99_ms"] = round(float(np.percentile(ms, 99)), 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labelers", type=int, default=20)
    parser.add_argument("--images", type=int, default=2100)
    parser.add_argument("--no-images", action="store_true", help="label only, no image downloads")
    parser.add_argument("--synchronous", nargs="+", default=["FULL"], help="SQLite sync levels to compare")
    parser.add_argument("--mode", choices=["single", "grid"], default="single")
    parser.add_argument("--grid-size", type=int, default=12, help="images per grid page")
    parser.add_argument("--out", default=None, help="append JSON lines here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ids, paths = write_images(Path(tmp) / "images", args.images)
        for sync in args.synchronous:
            result = run_once(args.labelers, ids, paths, not args.no_images, sync, Path(tmp), args.mode, args.grid_size)
            print(json.dumps(result), flush=True)
            if args.out:
                with open(args.out, "a") as fh:
                    fh.write(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), **result}) + "\n")
            ok = (
                result["lost"] == result["duplicated"] == result["unlabeled"] == 0
                and result["events"] == result["acked"]
            )
            print("integrity:", "OK (no lost, duplicated or unlabeled image)" if ok else "FAILED", flush=True)


if __name__ == "__main__":
    main()
