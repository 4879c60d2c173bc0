"""``strata export``: a run's selection (curated manifest, coreset, active or swipe labels) as a
training dataset: ImageFolder tree, WebDataset tar shards or JSONL."""

from pipeline.lazy import lazy_exports

_EXPORTS = {
    "ExportConfig": "rows",
    "export_rows": "rows",
    "run_export": "run",
    "WRITERS": "writers",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
