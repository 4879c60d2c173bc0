"""HTTP client for one labeler (a script, a load test, or a remote active-learning driver)."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import httpx

# One session key per client process: the server binds each annotator name to the session that
# used it first, so the clients of one program (threads, reconnects) keep their names.
PROCESS_SESSION = secrets.token_urlsafe(24)


class LabelClient:
    """Talks to a running labeler as ``annotator``; raises ``httpx.HTTPStatusError`` on 4xx/5xx."""

    def __init__(
        self, url: str, annotator: str, token: str | None = None, timeout: float = 30.0, session: str | None = None
    ):
        headers = {"X-Strata-Session": session or PROCESS_SESSION}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.annotator = annotator
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout)

    def _post(self, path: str, **body: Any) -> dict:
        response = self.http.post(path, json={"annotator": self.annotator, **body})
        response.raise_for_status()
        return response.json()

    def next(self, n: int = 4) -> list[str]:
        """Lease up to ``n`` ids to label (ids this annotator already holds come first)."""
        return [item["id"] for item in self._post("/api/next", n=n)["items"]]

    def label(self, item_id: str, label: str, request_id: str | None = None) -> dict:
        """Label ``item_id``; a retry with the same ``request_id`` is recorded once."""
        return self._post("/api/label", id=item_id, label=label, request_id=request_id or uuid.uuid4().hex)

    def undo(self, request_id: str | None = None) -> dict:
        """Cancel this annotator's latest label; returns ``{"id": ..., "label": ...}``."""
        return self._post("/api/undo", request_id=request_id or uuid.uuid4().hex)

    def page(self, n: int | None = None) -> list[dict]:
        """Lease a grid page: ``[{"id", "guess"}]`` of similar images (``labeler.grid_size`` by default)."""
        return self._post("/api/page", **({} if n is None else {"n": n}))["items"]

    def label_page(self, labels: dict[str, str], request_id: str | None = None) -> dict:
        """Label a whole page ``{id: label}`` at once; a retry with the same ``request_id`` counts once."""
        return self._post("/api/page/label", labels=labels, request_id=request_id or uuid.uuid4().hex)

    def undo_page(self, request_id: str | None = None) -> list[dict]:
        """Cancel this annotator's latest page (or single label); returns its ``[{"id", "guess"}]``."""
        return self._post("/api/page/undo", request_id=request_id or uuid.uuid4().hex)["items"]

    def release(self, ids: list[str] | None = None) -> int:
        return int(self._post("/api/release", ids=ids)["released"])

    def image(self, item_id: str) -> bytes:
        response = self.http.get("/api/image", params={"id": item_id})
        response.raise_for_status()
        return response.content

    def progress(self) -> dict:
        response = self.http.get("/api/progress")
        response.raise_for_status()
        return response.json()

    def labels(self) -> dict[str, str]:
        response = self.http.get("/api/labels")
        response.raise_for_status()
        return response.json()["labels"]

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> LabelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
