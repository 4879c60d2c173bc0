"""A model store of SSL checkpoints keyed by image resolution, product and method (SpaceML Curator's
"model zoo": tiles of a given resolution are embedded by the model trained at it).

Layout (a local folder or any fsspec URI)::

    <store>/index.json                 {"format_version": 1, "models": [entry, ...]}
    <store>/<method>-<product>-<resolution>/model.pt, meta.json

An entry: ``key`` (``<method>-<product>-<resolution>``), ``method``, ``product``, ``resolution`` (as
given, e.g. ``250m``), ``resolution_m`` (metres per pixel, or null when unknown), ``path`` (relative
to the store), ``dim``, ``output_dim``, ``image_size``, ``epochs``, ``loss``, ``registered_at``,
``source`` (the checkpoint it was copied from). Registering a key again replaces its entry.

Choice (:func:`select`): among entries of the requested method (and product, when one is trained on
it), the one minimising ``|log(resolution_m / input_m)|`` (nearest on a log scale: 250 m is as far
from 125 m as from 500 m); ties go to the most recently registered (then the later in the index).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import tempfile
from typing import Any

import fsspec

from pipeline.atomic import atomic_path

INDEX = "index.json"
FORMAT_VERSION = 1
_UNITS = {"m": 1.0, "km": 1000.0, "cm": 0.01}


def parse_resolution(value: Any) -> float | None:
    """Metres per pixel of ``250m``, ``1km``, ``15.625m``, ``30`` (metres), or None for null/unknown."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if value > 0 else None
    found = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(m|km|cm)?\s*", str(value).lower())
    if not found:
        return None
    metres = float(found.group(1)) * _UNITS[found.group(2) or "m"]
    return metres if metres > 0 else None


def _fs(store: str):
    return fsspec.core.url_to_fs(store)


def read_index(store: str) -> list[dict[str, Any]]:
    """The entries of ``store`` (empty when it has no index yet)."""
    fs, root = _fs(store)
    path = f"{root.rstrip('/')}/{INDEX}"
    if not fs.exists(path):
        return []
    with fs.open(path, "r") as fh:
        index = json.load(fh)
    if index.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{store}/{INDEX}: unsupported format_version {index.get('format_version')}")
    return list(index["models"])


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "_", str(value)) if value not in (None, "") else "any"


def register(
    store: str,
    checkpoint: str,
    *,
    resolution: Any = None,
    product: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Copy the checkpoint folder ``checkpoint`` (``model.pt`` + ``meta.json``) into ``store`` and
    index it under (resolution, product, method); returns the entry."""
    with open(os.path.join(checkpoint, "meta.json")) as fh:
        meta = json.load(fh)
    key = f"{meta['method']}-{_slug(product)}-{_slug(resolution)}"
    fs, root = _fs(store)
    root = root.rstrip("/")
    fs.makedirs(f"{root}/{key}", exist_ok=True)
    for name in ("model.pt", "meta.json"):
        fs.put_file(os.path.join(checkpoint, name), f"{root}/{key}/{name}")
    history = meta.get("history") or [{}]
    entry = {
        "key": key,
        "method": meta["method"],
        "product": product,
        "resolution": None if resolution is None else str(resolution),
        "resolution_m": parse_resolution(resolution),
        "path": key,
        "dim": meta.get("dim"),
        "output_dim": (meta.get("head") or {}).get("output_dim"),
        "image_size": meta.get("image_size"),
        "epochs": meta.get("epoch"),
        "loss": history[-1].get("loss"),
        "registered_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "source": os.path.abspath(checkpoint),
        **(extra or {}),
    }
    models = [m for m in read_index(store) if m["key"] != key] + [entry]
    with atomic_path(f"{root}/{INDEX}", fs) as tmp, fs.open(tmp, "w") as fh:
        json.dump({"format_version": FORMAT_VERSION, "models": models}, fh, indent=2, sort_keys=True)
    return entry


def _describe(entry: dict[str, Any]) -> str:
    res = entry["resolution"] or "unknown resolution"
    return f"{entry['key']} ({entry['method']}, {entry['product'] or 'any product'}, {res})"


def select(
    store: str, resolution: Any, *, method: str | None = None, product: str | None = None
) -> tuple[dict[str, Any], str]:
    """The entry to embed an input of ``resolution`` with, and a one-line reason for the choice."""
    models = read_index(store)
    if not models:
        raise ValueError(
            f"model store {store} is empty: register a checkpoint with `strata pretrain ssl.store={store}`"
        )
    if method:
        models = [m for m in models if m["method"] == method]
        if not models:
            raise ValueError(f"model store {store} has no {method} checkpoint")
    same_product = [m for m in models if product and m["product"] == product]
    candidates = same_product or models
    wanted = parse_resolution(resolution)
    known = [m for m in candidates if m["resolution_m"]]
    if wanted is None or not known:
        best = max(candidates, key=lambda m: _recency(m, models))
        why = "the input's resolution is unknown" if wanted is None else "no stored model records a resolution"
        return best, f"chose {_describe(best)}: {why}, so the most recent of {len(candidates)}"
    distance = {m["key"]: abs(math.log(m["resolution_m"] / wanted)) for m in known}
    nearest = min(distance.values())
    best = max((m for m in known if distance[m["key"]] <= nearest + 1e-9), key=lambda m: _recency(m, models))
    others = ", ".join(sorted({m["resolution"] for m in known if m is not best}))
    scope = f"trained on {product}" if same_product else "of any product"
    return best, (
        f"chose {_describe(best)}: nearest to the input's {resolution} ({wanted:g} m/px) among "
        f"{len(known)} {scope}" + (f" (others: {others})" if others else "")
    )


def _recency(entry: dict[str, Any], models: list[dict[str, Any]]) -> tuple[str, int]:
    """Registration time, then index position (a re-registered key moves to the end)."""
    return entry["registered_at"], models.index(entry)


def checkpoint_path(store: str, entry: dict[str, Any]) -> str:
    """A local folder holding the entry's checkpoint (copied from a remote store to a temp cache)."""
    fs, root = _fs(store)
    remote = f"{root.rstrip('/')}/{entry['path']}"
    if "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        return remote
    local = os.path.join(tempfile.gettempdir(), "strata-model-store", entry["key"], entry["registered_at"])
    if not os.path.exists(os.path.join(local, "model.pt")):
        os.makedirs(local, exist_ok=True)
        for name in ("meta.json", "model.pt"):
            fs.get_file(f"{remote}/{name}", os.path.join(local, name))
    return local


def input_resolution(input_cfg: dict[str, Any]) -> tuple[str | None, str | None]:
    """``(resolution, product)`` of an input: the single values of its Parquet ``resolution`` and
    ``product`` columns (the GIBS downloader writes them), else ``(None, None)``."""
    import pyarrow.parquet as pq

    from pipeline.io.tables import list_parquet_files

    path = str(input_cfg.get("path") or "")
    try:
        files = list_parquet_files(path)
    except (FileNotFoundError, OSError, ValueError):
        return None, None
    if not files:
        return None, None
    fs, local = fsspec.core.url_to_fs(files[0])
    names = set(pq.read_schema(fs.open(local, "rb")).names)
    columns = [c for c in ("resolution", "product") if c in names]
    if "resolution" not in columns:
        return None, None
    values: dict[str, set] = {c: set() for c in columns}
    for f in files:
        fs, local = fsspec.core.url_to_fs(f)
        table = pq.read_table(fs.open(local, "rb"), columns=columns)
        for c in columns:
            values[c].update(table.column(c).unique().to_pylist())
    if len(values["resolution"]) > 1:
        raise ValueError(
            f"input {path} mixes resolutions {sorted(map(str, values['resolution']))}: set embed.resolution= (or ssl.resolution=)"
        )
    product = values.get("product", set())
    return next(iter(values["resolution"])), (next(iter(product)) if len(product) == 1 else None)


def resolve_store_checkpoint(
    embed_cfg: dict[str, Any], input_cfg: dict[str, Any], log=None, run=None
) -> dict[str, Any]:
    """``embed_cfg`` with ``checkpoint`` set from ``embed.store`` (``embed=ssl``); unchanged otherwise.
    The choice and its reason are logged and, with ``run``, recorded in ``run.json`` (``model_store``)."""
    store = embed_cfg.get("store")
    if not store:
        return embed_cfg
    if embed_cfg.get("backbone") != "ssl":
        raise ValueError(f"embed.store={store} holds SSL checkpoints: use it with embed=ssl")
    if embed_cfg.get("checkpoint"):
        raise ValueError("give embed.checkpoint or embed.store, not both")
    resolution, product = embed_cfg.get("resolution"), None
    if resolution is None:
        resolution, product = input_resolution(input_cfg)
    entry, reason = select(store, resolution, product=product)
    if log is not None:
        log.info("embed.store: %s", reason)
    if run is not None:
        run.update_run_json(model_store={"store": store, "key": entry["key"], "reason": reason})
    # the entry's registration time in the step config: a model registered again re-embeds
    return {
        **embed_cfg,
        "checkpoint": checkpoint_path(store, entry),
        "store_entry": f"{entry['key']}@{entry['registered_at']}",
    }
