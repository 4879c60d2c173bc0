"""Seconds from ``strata curate`` starting to its first embedding, and to the end of the run.

Runs the job as a user does (a new process, a fresh run directory) once per engine and reports,
from the process's own output stamped as it arrives:

- ``first_embedding_s``: the first progress line of the embed step with at least one image done
  (the first batch of embeddings has left the model);
- ``step_s``, ``curate_s``: each step's seconds (``run.json``) and the whole process;
- ``ray_started``: whether the run started Ray at all.

Engines: ``local`` (the defaults on a small input: embed and level-1 k-means in process, Ray never
started) and ``ray`` (``embed.engine=ray kmeans.in_process=false``: Ray Data actors and k-means
shard actors, as on larger inputs). Target (issue 20): first embedding <= 10 s, the bundled demo
under 60 s end to end.

    python -m benchmarks.startup                       # the bundled UC Merced sample (1,050 images)
    python -m benchmarks.startup --input ../shared/datasets/aid150 --limit 2000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import REPO, machine

ENGINES = {
    "local": [],
    "ray": ["embed.engine=ray", "kmeans.in_process=false"],
}
_PROGRESS = re.compile(r"^embed (\d+)/")


def run_curate(args: list[str], run_dir: Path) -> dict:
    """One ``strata curate`` process; seconds to its milestones from its merged output."""
    cmd = [sys.executable, "-m", "jobs.curate", f"run_dir={run_dir}", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    marks: dict[str, float] = {}
    lines: list[str] = []

    def follow() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            now = time.perf_counter() - t0
            lines.append(line)
            found = _PROGRESS.match(line.strip())
            if found and int(found.group(1)) > 0:
                marks.setdefault("first_embedding_s", now)
            if "started local Ray" in line:
                marks.setdefault("ray_started_s", now)

    reader = threading.Thread(target=follow)
    reader.start()
    code = proc.wait()
    reader.join()
    total = time.perf_counter() - t0
    if code:
        raise SystemExit(f"strata curate failed ({code}):\n{''.join(lines[-20:])}")
    info = json.loads((run_dir / "run.json").read_text())
    return {
        "first_embedding_s": round(marks.get("first_embedding_s", float("nan")), 1),
        "ray_started": "ray_started_s" in marks,
        "step_s": info.get("timings", {}),
        "curate_s": round(total, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", default=None, help="input.path (default: the bundled sample)")
    ap.add_argument("--limit", type=int, default=None, help="input.limit")
    ap.add_argument("--engines", default="local,ray")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    extra = [f"input.path={args.input}"] if args.input else []
    extra += [f"input.limit={args.limit}"] if args.limit else []
    if args.limit and args.limit > 2000:
        extra.append(f"embed.local_max_images={args.limit}")  # the local side stays local
    results: dict[str, list[dict]] = {}
    for _ in range(args.repeats):
        for engine in args.engines.split(","):
            with tempfile.TemporaryDirectory(prefix="strata-startup-") as tmp:
                out = run_curate([*extra, *ENGINES[engine]], Path(tmp) / "run")
            results.setdefault(engine, []).append(out)
            print(engine, json.dumps(out), flush=True)
    report = {"machine": machine(), "input": args.input or "bundled sample", "limit": args.limit, "results": results}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
