"""Check that requirements/lock.txt still matches pyproject.toml (offline; run by .ci/run).

Both directions, from the lock's own pip-compile annotations:
- every dependency of ``[project]`` and of the ``dev`` extra is pinned, at a version its specifier
  allows (markers evaluated for this interpreter and platform);
- every pin the lock marks ``via strata (pyproject.toml)`` is still a dependency there (a removed or
  renamed dependency leaves no stale pin);
- every pin carries at least one ``--hash`` (pip then installs in hash-checking mode).

Prints one line per problem and the refresh command; exits 1 if any.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REFRESH = "bash requirements/refresh"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")
OWN = "strata (pyproject.toml)"
ROOT = Path(__file__).resolve().parents[1]


def parse_lock(text: str) -> dict[str, dict]:
    """{canonical name: {"version", "hashes", "via"}} from a pip-compile lock file."""
    pins: dict[str, dict] = {}
    current: dict | None = None
    for line in text.splitlines():
        m = PIN.match(line)
        if m:
            current = pins.setdefault(canonicalize_name(m[1]), {"version": m[2], "hashes": 0, "via": set()})
            continue
        stripped = line.strip()
        if current is None or not stripped:
            continue
        if stripped.startswith("--hash="):
            current["hashes"] += 1
        elif stripped.startswith("# via") or stripped.startswith("#   "):
            source = stripped.removeprefix("# via").lstrip("# ").strip()
            if source:
                current["via"].add(source)
    return pins


def declared(pyproject: dict, extras: tuple[str, ...] = ("dev",)) -> list[Requirement]:
    """The project's dependencies plus those of ``extras``, as parsed requirements."""
    project = pyproject["project"]
    reqs = list(project.get("dependencies", []))
    for extra in extras:
        reqs += project.get("optional-dependencies", {}).get(extra, [])
    return [Requirement(r) for r in reqs]


def problems(pyproject: dict, lock_text: str) -> list[str]:
    """Every way the lock fails to match ``pyproject``; empty when it matches."""
    pins = parse_lock(lock_text)
    out: list[str] = []
    wanted: set[str] = set()
    for req in declared(pyproject):
        if req.marker is not None and not req.marker.evaluate({"extra": "dev"}):
            continue
        name = canonicalize_name(req.name)
        wanted.add(name)
        pin = pins.get(name)
        if pin is None:
            out.append(f"{req} is in pyproject.toml but not pinned in the lock")
        elif req.specifier and not req.specifier.contains(pin["version"], prereleases=True):
            out.append(f"{name}=={pin['version']} in the lock does not satisfy {req} in pyproject.toml")
    for name, pin in sorted(pins.items()):
        if OWN in pin["via"] and name not in wanted:
            out.append(f"{name}=={pin['version']} is pinned for pyproject.toml, which no longer asks for it")
        if pin["hashes"] == 0:
            out.append(f"{name}=={pin['version']} has no --hash in the lock")
    return out


def main(root: Path = ROOT) -> int:
    lock = root / "requirements" / "lock.txt"
    if not lock.is_file():
        print(f"check_lock: {lock} is missing; make it with: {REFRESH}")
        return 1
    found = problems(tomllib.loads((root / "pyproject.toml").read_text()), lock.read_text())
    for line in found:
        print(f"check_lock: {line}")
    if found:
        print(f"check_lock: the lock is stale; refresh it with: {REFRESH}")
        return 1
    print(f"check_lock: {lock.relative_to(root)} matches pyproject.toml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
