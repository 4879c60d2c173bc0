"""``strata <job> [hydra overrides]``: forwards to ``python -m jobs.<job> [overrides]``."""

from __future__ import annotations

import os
import pkgutil
import runpy
import sys

import jobs


def available_jobs() -> list[str]:
    """Job names (dashes for underscores) of every public module in ``jobs/``."""
    return sorted(
        m.name.replace("_", "-")
        for m in pkgutil.iter_modules(jobs.__path__)
        if not m.name.startswith("_") and m.name != "cli"
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = available_jobs()
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("usage: strata <job> [key=value ...]\n\njobs:\n  " + "\n  ".join(names))
        print("\n`strata <job> --help` shows a job's configuration.")
        return 0 if argv else 2
    job, rest = argv[0], argv[1:]
    if job not in names:
        print(f"strata: unknown job {job!r}; choose one of: {', '.join(names)}", file=sys.stderr)
        return 2
    module = f"jobs.{job.replace('-', '_')}"
    sys.argv = [f"strata {job}", *rest]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except BrokenPipeError:  # `strata <job> --help | head`: the reader left; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
