"""What both HTTP servers (search, labeler) share to face untrusted clients.

- **Who may bind where**: :func:`access_token` — loopback binds may run without a token; any other
  address requires one (a random one is generated when none is configured, and shown once).
- **DNS rebinding**: :func:`host_allowed` checks the ``Host`` header against loopback names plus an
  allowlist, so a web page on another origin cannot talk to a token-less loopback server.
- **Tokens**: :func:`presented_token` (``Authorization: Bearer``, cookie) and :func:`same_secret`
  (constant-time comparison).
- **Bounded parsing**: :func:`json_depth` measures the nesting of a JSON text without parsing it.
- **Secrets out of records**: :func:`redact` masks secret-looking keys of a config before it is
  written to ``run.json`` or logged.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

REDACTED = "***"
_SECRET_KEY = re.compile(r"(token|secret|password|passwd|api_key|apikey|credential)s?$", re.IGNORECASE)
_SECRET_OVERRIDE = re.compile(
    r"^([+~]*[\w.]*?(token|secret|password|passwd|api_key|apikey|credential)s?)=(.+)$", re.IGNORECASE | re.DOTALL
)
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def is_loopback(host: str) -> bool:
    """Whether a bind address or host name reaches this machine only (``127.0.0.0/8``, ``::1``, localhost)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def access_token(host: str, token: str | None) -> tuple[str | None, bool]:
    """``(token, generated)`` for a server bound to ``host``: the configured token; else a new
    random one when ``host`` is not loopback (``generated=True``: show it to the operator once)."""
    if token:
        return str(token), False
    if is_loopback(host):
        return None, False
    return secrets.token_urlsafe(24), True


def host_allowed(host_header: str | None, allowed: Iterable[str] = (), any_host: bool = False) -> bool:
    """Whether a request's ``Host`` header names this server: a loopback name or one of ``allowed``
    (port ignored). ``any_host``: servers bound beyond loopback with a token accept any name."""
    if any_host:
        return True
    if not host_header:
        return False
    name = host_header.strip().lower()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    return is_loopback(name) or name in {a.lower() for a in allowed}


def presented_token(headers: Mapping[str, str], cookies: Mapping[str, str], cookie: str) -> str | None:
    """The token a request carries: ``Authorization: Bearer <t>`` or the cookie named ``cookie``."""
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return cookies.get(cookie)


def same_secret(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented secret with the expected one."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def json_depth(text: bytes | str) -> int:
    """Deepest nesting of ``[``/``{`` in a JSON text, strings excluded, in O(n) without recursion.

    Computed as ``max_i sum_{j<=i} s_j`` with ``s_j = +1`` for an opening bracket, ``-1`` for a
    closing one and 0 otherwise, after removing string literals.
    """
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    chars = np.frombuffer(_JSON_STRING.sub(b'""', data), np.uint8)
    steps = np.isin(chars, (ord("["), ord("{"))).astype(np.int64) - np.isin(chars, (ord("]"), ord("}")))
    return int(np.cumsum(steps).max(initial=0))


def redact(cfg: Any) -> Any:
    """A copy of a (nested) config with secret-looking values (keys ``*token``, ``*secret``,
    ``*password``, ...) replaced by ``"***"``; unset (null) secrets stay null. Command-line
    overrides in lists (``labeler.token=abc``, as Hydra records them) are masked the same way."""
    if isinstance(cfg, Mapping):
        return {
            k: (
                REDACTED
                if _SECRET_KEY.search(str(k)) and v not in (None, "") and not isinstance(v, Mapping)
                else redact(v)
            )
            for k, v in cfg.items()
        }
    if isinstance(cfg, (list, tuple)):
        return [redact(v) for v in cfg]
    if isinstance(cfg, str):
        m = _SECRET_OVERRIDE.match(cfg)
        return f"{m.group(1)}={REDACTED}" if m and m.group(3) != "null" else cfg
    return cfg


def redact_yaml_files(folder: str) -> list[str]:
    """Rewrite every ``*.yaml`` directly in ``folder`` (a Hydra ``.hydra``/``hydra`` output folder:
    ``config.yaml``, ``overrides.yaml``, ``hydra.yaml``) with :func:`redact` applied; returns the
    files changed."""
    import os

    import yaml

    changed = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name)
        if not name.endswith(".yaml"):
            continue
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
        clean = redact(data)
        if clean != data:
            with open(path, "w", encoding="utf-8") as fh:
                yaml.safe_dump(clean, fh, sort_keys=False)
            changed.append(path)
    return changed


__all__ = [
    "access_token",
    "host_allowed",
    "is_loopback",
    "json_depth",
    "presented_token",
    "redact",
    "redact_yaml_files",
    "same_secret",
]
