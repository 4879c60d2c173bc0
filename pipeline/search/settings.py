"""How ``strata serve`` answers: :class:`ServeSettings` (``conf/serve.yaml``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.config import load_group
from pipeline.search.service import QueryLimits


@dataclass(frozen=True)
class ServeSettings:
    """How ``strata serve`` answers (``conf/serve.yaml``: every default lives there).

    ``host``: the bind address (decides whether a token is required and which ``Host`` headers pass);
    ``token``: required from clients when set; ``allowed_hosts``: ``Host`` names accepted besides
    loopback ones; ``expose_uri``: include each hit's server-side ``uri``; ``docs``: serve ``/docs``.
    """

    host: str
    token: str | None
    allowed_hosts: tuple[str, ...]
    expose_uri: bool
    docs: bool
    max_upload_bytes: int
    max_body_bytes: int
    max_json_depth: int
    max_page: int
    max_filter_values: int
    workers: int
    queue: int
    request_timeout_s: float
    query: QueryLimits

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ServeSettings:
        """From a ``conf/serve.yaml``-shaped mapping (``limits`` holds the per-request bounds)."""
        limits = cfg["limits"]
        return cls(
            host=str(cfg["host"]),
            token=cfg["token"] or None,
            allowed_hosts=tuple(cfg["allowed_hosts"] or ()),
            expose_uri=bool(cfg["expose_uri"]),
            docs=bool(cfg["docs"]),
            max_upload_bytes=int(float(cfg["max_upload_mb"]) * 2**20),
            max_body_bytes=int(float(limits["max_body_mb"]) * 2**20),
            max_json_depth=int(limits["max_json_depth"]),
            max_page=int(limits["max_page"]),
            max_filter_values=int(limits["max_filter_values"]),
            workers=int(limits["workers"]),
            queue=int(limits["queue"]),
            request_timeout_s=float(limits["request_timeout_s"]),
            query=QueryLimits.from_config(limits),
        )

    @classmethod
    def defaults(cls, **overrides: Any) -> ServeSettings:
        """The settings of ``conf/serve.yaml`` as shipped (tests, library users), with ``overrides``."""
        cfg = load_group("serve")
        limits = {**cfg["limits"], **{k: overrides.pop(k) for k in list(overrides) if k in cfg["limits"]}}
        return cls.from_config({**cfg, **overrides, "limits": limits})
