"""One source per default: a library function must not restate or contradict a ``conf/`` value.

For every function of ``pipeline/<package>/`` the test reads (AST, nothing imported) the parameters
with a literal default and looks their names up among the leaf keys of the ``conf/`` groups of that
package (:data:`GROUPS`). A match is a default stated twice: either it restates the YAML (drift
waiting to happen) or it contradicts it (SimCLR's temperature was 0.5 in code, 0.2 in
``conf/ssl/simclr.yaml``; the k-means metric is ``l2`` in code, ``cosine`` in ``conf/kmeans``). Such
a parameter should have no default (the caller passes its config) or the function should take its
config dataclass. :data:`KNOWN` lists the ones not yet fixed; the test fails on a new one and on a
fixed one still listed, so the list only shrinks.
"""

from __future__ import annotations

import ast
import collections
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# package of pipeline/ -> its conf/ groups (a folder: every YAML in it; a file: that YAML)
GROUPS = {
    "ssl": ["ssl", "pretrain.yaml", "trainer"],
    "embed": ["embed", "input", "embed.yaml"],
    "backbones": ["embed", "ssl"],
    "io": ["input"],
    "kmeans": ["kmeans", "cluster.yaml", "plan.yaml"],
    "dedup": ["dedup", "dedup.yaml"],
    "sampling": ["sampling", "sample.yaml"],
    "coreset": ["coreset", "coreset.yaml"],
    "active": ["active", "active.yaml", "evaluate_active.yaml"],
    "search": ["search", "search.yaml", "index.yaml", "serve.yaml"],
    "labeler": ["labeler", "label.yaml"],
    "satellite": ["satellite", "download", "download.yaml", "preprocess", "ssl/augment/satellite.yaml"],
    "export": ["export.yaml"],
}

# Not fixed yet: file -> {"function.parameter"} (none left; a new finding fails the test).
KNOWN: dict[str, set[str]] = {}


# Same name, another setting (not a second source of a conf value).
NOT_THE_SAME = {
    # the resolved engine (local | ray), not dedup.copies.engine (auto | local | ray)
    "pipeline/dedup/candidates.py": {"descriptor_pairs.engine", "hamming_pairs.engine"},
    "pipeline/dedup/copies.py": {"sharded_copy_scores.engine"},
    "pipeline/io/tables.py": {"iter_embedding_batches.columns"},  # columns to read, not input.columns
    "pipeline/labeler/export.py": {"export_imagefolder.mode"},  # symlink | copy, not labeler.mode
}


def _conf_leaves(package: str) -> dict[str, set[str]]:
    leaves: dict[str, set[str]] = collections.defaultdict(set)

    def walk(node: dict) -> None:
        for key, value in node.items():
            if key in ("defaults", "hydra"):
                continue
            if isinstance(value, dict):
                walk(value)
            else:
                leaves[key].add(repr(tuple(value) if isinstance(value, list) else value))

    for group in GROUPS.get(package, []):
        path = ROOT / "conf" / group
        for f in [path] if path.suffix == ".yaml" else sorted(path.rglob("*.yaml")):
            walk(yaml.safe_load(f.read_text()) or {})
    return leaves


def _literal_defaults(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[tuple[str, object]]:
    a = fn.args
    positional = a.posonlyargs + a.args
    pairs = list(zip(positional[len(positional) - len(a.defaults) :], a.defaults))
    pairs += [(k, d) for k, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
    out = []
    for arg, node in pairs:
        if isinstance(node, ast.Call):  # a framework marker (FastAPI Query(...)), not a value
            continue
        try:
            value = ast.literal_eval(node)
        except ValueError:
            value = ast.unparse(node)  # a named constant: still a second source
        if value is not None:
            out.append((arg.arg, value))
    return out


def stated_twice() -> dict[str, dict[str, str]]:
    """file -> {"function.parameter": "restates ..." | "contradicts ..."} over ``pipeline/``."""
    found: dict[str, dict[str, str]] = collections.defaultdict(dict)
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        leaves = _conf_leaves(rel.split("/")[1]) if rel.count("/") >= 2 else {}
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for name, value in _literal_defaults(fn):
                if name in leaves:
                    shown = repr(tuple(value) if isinstance(value, list) else value)
                    verb = "restates" if shown in leaves[name] else "contradicts"
                    found[rel][f"{fn.name}.{name}"] = f"{verb} conf ({shown} vs {sorted(leaves[name])})"
    return found


def test_no_library_default_restates_or_contradicts_conf():
    found = stated_twice()
    allowed = {f: KNOWN.get(f, set()) | NOT_THE_SAME.get(f, set()) for f in found}
    new = {f"{f}:{k}": why for f, ks in found.items() for k, why in ks.items() if k not in allowed[f]}
    assert not new, "defaults stated outside conf/ (take the config, or drop the default):\n" + "\n".join(
        f"{k} {why}" for k, why in sorted(new.items())
    )
    listed = [(f, k) for table in (KNOWN, NOT_THE_SAME) for f, ks in table.items() for k in ks]
    stale = sorted(f"{f}:{k}" for f, k in listed if k not in found.get(f, {}))
    assert not stale, f"fixed, so remove from KNOWN: {stale}"


def test_the_check_catches_the_ssl_temperature_it_was_written_for(tmp_path):
    """The scan itself: a SimCLR with ``temperature=0.5`` is reported as contradicting ``0.2``."""
    fake = tmp_path / "pipeline" / "ssl"
    fake.mkdir(parents=True)
    (fake / "methods.py").write_text("def simclr(temperature=0.5, output_dim=128, other=3):\n    pass\n")
    (tmp_path / "conf").symlink_to(ROOT / "conf")
    globals()["ROOT"], saved = tmp_path, ROOT
    try:
        found = stated_twice()["pipeline/ssl/methods.py"]
    finally:
        globals()["ROOT"] = saved
    assert found["simclr.temperature"].startswith("contradicts conf (0.5 vs ['0.2'])")
    assert found["simclr.output_dim"].startswith("restates conf (128")
    assert "simclr.other" not in found
