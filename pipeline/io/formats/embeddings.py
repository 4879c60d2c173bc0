"""Embeddings made elsewhere (``input.format=embeddings``, ``.npy``): imported by the embed step
(:mod:`pipeline.io.embeddings`), never read as images."""

from __future__ import annotations

from typing import Any

from pipeline.io.formats import InputFormat, register


def list_units(cfg: Any, path: str) -> list[dict]:
    raise ValueError(f"input.path={path} holds embeddings (input.format=embeddings), and this step needs images")


register(InputFormat("embeddings", (".npy",), list_units, whole_folder=False))
