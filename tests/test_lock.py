"""The locked dependency set: .ci/check_lock.py accepts the repository's lock and names each way a
lock can drift from pyproject.toml."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_lock", ROOT / ".ci" / "check_lock.py")
check_lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_lock)

LOCK = """\
numpy==2.4.6 \\
    --hash=sha256:aaaa
    # via
    #   strata (pyproject.toml)
    #   scipy
pytest==9.2.0 \\
    --hash=sha256:bbbb \\
    --hash=sha256:cccc
    # via strata (pyproject.toml)
scipy==1.17.1 \\
    --hash=sha256:dddd
    # via strata (pyproject.toml)
"""


def project(deps: list[str], dev: list[str] | None = None) -> dict:
    return {"project": {"dependencies": deps, "optional-dependencies": {"dev": dev or ["pytest>=8"]}}}


def test_repository_lock_matches_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert check_lock.problems(pyproject, (ROOT / "requirements" / "lock.txt").read_text()) == []
    assert check_lock.main(ROOT) == 0


def test_parse_lock_reads_pins_hashes_and_sources():
    pins = check_lock.parse_lock(LOCK)
    assert pins["numpy"] == {"version": "2.4.6", "hashes": 1, "via": {"strata (pyproject.toml)", "scipy"}}
    assert pins["pytest"]["hashes"] == 2 and pins["scipy"]["via"] == {"strata (pyproject.toml)"}


@pytest.mark.parametrize(
    ("deps", "lock", "problem"),
    [
        (["numpy>=1.26", "scipy>=1.11"], LOCK, None),
        (["numpy>=3", "scipy>=1.11"], LOCK, "numpy==2.4.6 in the lock does not satisfy numpy>=3"),
        (["numpy>=1.26", "scipy>=1.11", "pillow>=10"], LOCK, "pillow>=10 is in pyproject.toml but not pinned"),
        (["numpy>=1.26"], LOCK, "scipy==1.17.1 is pinned for pyproject.toml, which no longer asks for it"),
        (["numpy>=1.26", "scipy>=1.11"], LOCK.replace("--hash=sha256:aaaa", ""), "numpy==2.4.6 has no --hash"),
        (["numpy>=1.26", "scipy>=1.11", "pywin32>=300; sys_platform == 'win32'"], LOCK, None),
    ],
)
def test_each_drift_is_named(deps, lock, problem):
    found = check_lock.problems(project(deps), lock)
    if problem is None:
        assert found == []
    else:
        assert len(found) == 1 and found[0].startswith(problem), found


def test_stale_lock_fails_with_the_refresh_command(tmp_path, capsys):
    (tmp_path / "requirements").mkdir()
    (tmp_path / "pyproject.toml").write_text('[project]\ndependencies = ["numpy>=3"]\n')
    (tmp_path / "requirements" / "lock.txt").write_text(LOCK)
    assert check_lock.main(tmp_path) == 1
    out = capsys.readouterr().out
    assert "numpy==2.4.6 in the lock does not satisfy numpy>=3" in out and check_lock.REFRESH in out
