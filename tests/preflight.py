"""Check what the full suite needs before it runs: without it, tests would skip and CI would pass.

``python tests/preflight.py`` exits 1 with one line naming what is missing (the shared datasets,
Chromium for the browser tests); ``STRATA_DATASETS`` points at another datasets folder.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def missing() -> list[str]:
    datasets = Path(os.environ.get("STRATA_DATASETS", REPO.parent / "shared" / "datasets"))
    out = [str(datasets / name) for name in ("ucmerced", "aid150") if not (datasets / name).is_dir()]
    if shutil.which("chromium") is None:
        out.append("chromium (apt-get install chromium)")
    return out


if __name__ == "__main__":
    gaps = missing()
    if gaps:
        print(f"the test suite cannot run in full, missing: {', '.join(gaps)}", file=sys.stderr)
        sys.exit(1)
