"""Swipe labeler: a durable SQLite label store, a browser app to fill it, and a Python API.

from pipeline.labeler import LabelStore, serve
store = LabelStore("runs/x/labels/labels.sqlite")          # positive / negative / unsure
store.register(ids, uris); store.enqueue(batch_ids, batch="round-1")
with serve(store.path, port=0) as server:                   # server.url, server.stop()
    labels = store.wait_for_labels(batch_ids, timeout=600)  # {id: label}

Grid mode (``LabelerSettings(mode="grid", neighbours_from=run_dir)``): pages of similar images,
pre-marked with ``store.set_guesses({id: label})`` or ``grid_guess``; ``store.label_page`` /
``store.undo_page`` write and cancel a whole page (``LabelClient.page``, ``label_page``, ``undo_page``).
"""

from pipeline.labeler.app import LabelerSettings, create_app
from pipeline.labeler.client import LabelClient
from pipeline.labeler.export import export_imagefolder, export_parquet, labels_table, read_catalog
from pipeline.labeler.server import LabelServer, serve
from pipeline.labeler.store import BINARY_LABELS, LabelError, LabelEvent, LabelStore, Progress

__all__ = [
    "BINARY_LABELS",
    "LabelClient",
    "LabelError",
    "LabelEvent",
    "LabelServer",
    "LabelStore",
    "LabelerSettings",
    "Progress",
    "create_app",
    "export_imagefolder",
    "export_parquet",
    "labels_table",
    "read_catalog",
    "serve",
]
