"""What the swipe labeler app serves: :class:`LabelerSettings` (defaults in ``conf/labeler/default.yaml``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import load_group


@dataclass
class LabelerSettings:
    """What the app serves: how long leases last, how large images are, who may enter."""

    lease_seconds: float = field(default_factory=lambda: conf_default("lease_seconds"))
    prefetch: int = field(default_factory=lambda: conf_default("prefetch"))
    thumbnail_max_side: int = field(default_factory=lambda: conf_default("thumbnail_max_side"))
    cache_items: int = field(default_factory=lambda: conf_default("cache_items"))
    token: str | None = None
    title: str = "Strata swipe labeler"
    host: str = "127.0.0.1"  # the bind address (set by server.serve): decides the Host check
    allowed_hosts: list[str] = field(default_factory=lambda: conf_default("allowed_hosts"))
    max_leased: int = field(default_factory=lambda: conf_default("max_leased"))
    max_annotators: int = field(default_factory=lambda: conf_default("max_annotators"))
    max_body_kb: int = field(default_factory=lambda: conf_default("max_body_kb"))
    prompt: str | None = field(default_factory=lambda: conf_default("prompt"))
    reference: str | None = field(default_factory=lambda: conf_default("reference"))
    show_ids: bool = field(default_factory=lambda: conf_default("show_ids"))
    mode: str = field(default_factory=lambda: conf_default("mode"))
    grid_size: int = field(default_factory=lambda: conf_default("grid_size"))
    grid_guess: str | None = field(default_factory=lambda: conf_default("grid_guess"))
    neighbours_from: str | None = None  # a run directory: its embeddings (or clusters) group grid pages

    def check(self, labels: Sequence[str]) -> None:
        """Raise ``ValueError`` (one line, naming the setting) for settings the app cannot serve."""
        if self.mode not in ("single", "grid"):
            raise ValueError(f"labeler.mode must be single or grid, got {self.mode!r}")
        if self.mode == "grid" and not 1 <= self.grid_size <= min(64, self.max_leased):
            raise ValueError(
                f"labeler.grid_size must be 1..{min(64, self.max_leased)} (labeler.max_leased), got {self.grid_size}"
            )
        if self.grid_guess is not None and self.grid_guess not in labels:
            raise ValueError(f"labeler.grid_guess {self.grid_guess!r} is not one of the labels {list(labels)}")
        if self.prompt is not None and len(self.prompt) > 300:
            raise ValueError(f"labeler.prompt is {len(self.prompt)} characters, at most 300")


def conf_default(key: str) -> Any:
    """A default of ``conf/labeler/default.yaml`` (its one source)."""
    return load_group("labeler/default")[key]
