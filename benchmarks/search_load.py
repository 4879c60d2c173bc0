"""Load test of the search server: ordinary queries beside hostile clients, on loopback, for a bounded time.

The server runs in a child process (``--serve``): 1,050 UC Merced images embedded with the
project's default backbone (efficientnet_lite0, 160 px; cached under ``benchmarks/.cache``), a flat
index, ``create_app`` with the shipped ``conf/serve.yaml`` settings. The parent drives clients
(asyncio + httpx) and reads the child's peak RSS (``VmHWM``).

- ordinary client: alternates a query by id (k=10) and an upload of a 256 px JPEG (k=10);
- hostile client, cycling through the attacks of issue 17: 1,024 tiles (``16x16`` x 4), a
  13,000 x 13,000 PNG (~0.5 MB), JSON nested 50,000 deep in the body and in the multipart
  ``filters`` field, and the most work a query may legally ask for (16 tiles of a 2048 px JPEG).

Phases: one ordinary client alone; the ordinary clients alone (three quarters of ``--clients``: the
unloaded baseline); the same ordinary clients plus a quarter of ``--clients`` hostile ones. Reports
p50/p99 of ordinary queries per phase, status counts, the loaded / unloaded p99 ratio (target <= 5)
and the server's peak memory (target <= 2 GB).

    .venv/bin/python benchmarks/search_load.py --clients 16 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATASETS = Path(os.environ.get("STRATA_DATASETS", REPO.parent / "shared" / "datasets"))
CACHE = REPO / "benchmarks" / ".cache" / "search_load"
PART = DATASETS / "ucmerced" / "part-00000.parquet"
EMBED = {"backbone": "efficientnet_lite0", "image_size": 160, "batch_size": 32, "num_threads": 1}


# ---- server (child process) --------------------------------------------------------------------
def serve(port: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import uvicorn

    from pipeline.embed.embedder import Embedder
    from pipeline.io.sources import load_image_bytes
    from pipeline.search.app import create_app
    from pipeline.search.index import SearchIndex
    from pipeline.search.service import SearchService

    table = pq.read_table(PART, columns=["id", "label"])
    CACHE.mkdir(parents=True, exist_ok=True)
    cached = CACHE / "embeddings.npy"
    if not cached.exists():
        embedder = Embedder(EMBED)
        images = pq.read_table(PART, columns=["image"]).column("image").to_pylist()
        np.save(cached, np.concatenate([embedder.embed_bytes(images[i : i + 64]) for i in range(0, len(images), 64)]))
    vectors = np.load(cached)
    meta = pa.table(
        {
            "id": table.column("id"),
            "uri": [f"{PART}#{i}" for i in range(table.num_rows)],
            "label": table.column("label"),
        }
    )
    index = SearchIndex.build(vectors, cfg={"kind": "flat"}, meta=meta)
    service = SearchService(index, embedder_factory=lambda: Embedder(EMBED), image_loader=load_image_bytes)
    service.warmup()
    uvicorn.run(create_app(service), host="127.0.0.1", port=port, log_level="warning", access_log=False)


# ---- clients -----------------------------------------------------------------------------------
def _jpeg(side: int, seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize(
        (side, side), Image.Resampling.BILINEAR
    )
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=90)
    return out.getvalue()


def hostile_payloads() -> list[tuple[str, dict]]:
    from PIL import Image

    bomb = CACHE / "13000.png"
    if not bomb.exists():
        Image.new("1", (13000, 13000)).save(bomb, format="PNG", optimize=True)
    deep = "[" * 50_000 + "]" * 50_000
    return [
        ("tiles-1024", {"json": {"id": "agricultural/agricultural00.tif", "tiles": "16x16,16x16,16x16,16x16"}}),
        ("png-13000", {"files": {"image": ("b.png", bomb.read_bytes(), "image/png")}}),
        ("deep-json-body", {"content": deep.encode(), "headers": {"content-type": "application/json"}}),
        ("deep-json-form", {"data": {"id": "agricultural/agricultural00.tif", "filters": deep}}),
        (
            "max-legal-work",
            {"files": {"image": ("big.jpg", _jpeg(2048, 7), "image/jpeg")}, "data": {"tiles": "4x4", "k": "100"}},
        ),
    ]


async def client(http, kind: str, ids: list[str], deadline: float, out: dict, seed: int) -> None:
    rng = np.random.default_rng(seed)
    small = _jpeg(256, seed)
    hostile = hostile_payloads() if kind == "hostile" else []
    i = 0
    while time.monotonic() < deadline:
        if kind == "hostile":
            name, kwargs = hostile[i % len(hostile)]
        elif i % 2 == 0:
            name, kwargs = "id", {"json": {"id": ids[int(rng.integers(len(ids)))], "k": 10}}
        else:
            name, kwargs = "image", {"files": {"image": ("q.jpg", small, "image/jpeg")}, "data": {"k": "10"}}
        t0 = time.perf_counter()
        busy = 0
        while True:  # an ordinary client honours 503 + Retry-After; its latency is time to the answer
            try:
                r = await http.post("/search", **kwargs)
                status = r.status_code
            except Exception as exc:  # noqa: BLE001 - a failed request is a result here
                status = type(exc).__name__
            if status != 503 or kind == "hostile" or time.monotonic() >= deadline:
                break
            busy += 1
            await asyncio.sleep(min(1.0, float(r.headers.get("retry-after", 1))) * rng.uniform(0.2, 1.0))
        ms = 1000 * (time.perf_counter() - t0)
        out.setdefault(kind, []).append((name, status, ms, busy))
        i += 1


async def run_phase(url: str, ordinary: int, hostile: int, seconds: float, ids: list[str]) -> dict:
    import httpx

    out: dict[str, list] = {}
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=ordinary + hostile + 4)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        await asyncio.gather(
            *[client(http, "ordinary", ids, deadline, out, s) for s in range(ordinary)],
            *[client(http, "hostile", ids, deadline, out, 1000 + s) for s in range(hostile)],
        )
    return out


def summary(rows: list[tuple[str, object, float, int]]) -> dict:
    ok = np.array([ms for _, status, ms, _ in rows if status == 200])
    every = np.array([ms for _, _, ms, _ in rows])
    return {
        "n": len(rows),
        "ok": len(ok),
        "p50_ms": round(float(np.percentile(ok, 50)), 1) if len(ok) else None,
        "p99_ms": round(float(np.percentile(ok, 99)), 1) if len(ok) else None,
        "p99_any_status_ms": round(float(np.percentile(every, 99)), 1) if len(every) else None,
        "statuses": dict(Counter(str(s) for _, s, _, _ in rows)),
        "503_retries": sum(b for *_, b in rows),
    }


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--baseline-seconds", type=float, default=30)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    import httpx
    import pyarrow.parquet as pq

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], env=env)
    try:
        start = time.monotonic()
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if child.poll() is not None or time.monotonic() - start > 900:
                raise RuntimeError("search server did not start")
            time.sleep(0.5)
        ids = pq.read_table(PART, columns=["id"]).column("id").to_pylist()
        hostile_payloads()  # build the attack files before timing
        Path(f"/proc/{child.pid}/clear_refs").write_text("5")  # peak RSS from here on (not the start-up embedding)
        rss_idle = peak_rss_mb(child.pid)
        hostile = args.clients // 4
        single = asyncio.run(run_phase(url, 1, 0, args.baseline_seconds, ids))
        base = asyncio.run(run_phase(url, args.clients - hostile, 0, args.baseline_seconds, ids))
        loaded = asyncio.run(run_phase(url, args.clients - hostile, hostile, args.seconds, ids))
        result = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.node()} {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}",
            "command": " ".join(sys.argv),
            "one_client": summary(single["ordinary"]),
            "baseline_ordinary_only": summary(base["ordinary"]),
            "loaded_ordinary": summary(loaded["ordinary"]),
            "loaded_ordinary_by_kind": {
                k: summary([r for r in loaded["ordinary"] if r[0] == k]) for k in ("id", "image")
            },
            "baseline_by_kind": {k: summary([r for r in base["ordinary"] if r[0] == k]) for k in ("id", "image")},
            "loaded_hostile": {
                name: summary([r for r in loaded["hostile"] if r[0] == name])
                for name in sorted({r[0] for r in loaded["hostile"]})
            },
            "server_peak_rss_mb": {"idle": round(rss_idle), "after_load": round(peak_rss_mb(child.pid))},
        }
        b, lo = result["baseline_ordinary_only"]["p99_ms"], result["loaded_ordinary"]["p99_ms"]
        result["p99_ratio"] = round(lo / b, 2) if b and lo else None
        result["target_met"] = bool(
            result["p99_ratio"] is not None
            and result["p99_ratio"] <= 5
            and result["server_peak_rss_mb"]["after_load"] <= 2048
        )
        print(json.dumps(result, indent=1))
        with open(REPO / "benchmarks" / ".cache" / "search_load.jsonl", "a") as fh:
            fh.write(json.dumps(result) + "\n")
    finally:
        child.terminate()
        child.wait(30)


if __name__ == "__main__":
    main()
