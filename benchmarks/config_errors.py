"""How fast and how short a bad command line fails (issue target: under 20 s, at most six lines,
no run directory created).

    .venv/bin/python -m benchmarks.config_errors [--repeats 3]

Runs ``strata curate`` with a value of the wrong type, a missing input path and a misspelled key,
each in a fresh process (what a user pays: interpreter start, imports, composing the config).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    "wrong type": ["sample.target_size=abc"],
    "missing input": ["input.path=/no/such/folder"],
    "misspelled key": ["sample.targt_size=5"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    strata = Path(sys.executable).with_name("strata")
    print("| case | median s | max s | lines | exit | run dir created |")
    print("|---|---:|---:|---:|---:|---|")
    for name, overrides in CASES.items():
        times, lines, codes, created = [], 0, set(), False
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                run_dir = Path(tmp) / "run"
                t0 = time.perf_counter()
                out = subprocess.run(
                    [str(strata), "curate", f"run_dir={run_dir}", *overrides], capture_output=True, text=True, cwd=tmp
                )
                times.append(time.perf_counter() - t0)
                lines = max(lines, len((out.stdout + out.stderr).strip().splitlines()))
                codes.add(out.returncode)
                created |= run_dir.exists()
        print(
            f"| {name} (`{' '.join(overrides)}`) | {statistics.median(times):.2f} | {max(times):.2f} | {lines} "
            f"| {','.join(map(str, sorted(codes)))} | {'yes' if created else 'no'} |"
        )


if __name__ == "__main__":
    main()
