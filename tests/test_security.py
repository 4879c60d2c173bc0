"""pipeline.security: token rules, Host allowlist, JSON depth without parsing, redaction."""

from __future__ import annotations

import json

import pytest

from pipeline.security import (
    REDACTED,
    access_token,
    host_allowed,
    is_loopback,
    json_depth,
    redact,
)


def test_loopback_and_token_rules():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "", "::", "192.168.1.2", "example.org"))
    assert access_token("127.0.0.1", None) == (None, False)
    assert access_token("0.0.0.0", "given") == ("given", False)
    generated = {access_token("0.0.0.0", None)[0] for _ in range(3)}
    assert len(generated) == 3 and all(len(t) >= 24 for t in generated)


@pytest.mark.parametrize(
    "header,ok",
    [
        ("127.0.0.1:8000", True),
        ("localhost", True),
        ("[::1]:8000", True),
        ("LOCALHOST:1", True),
        ("evil.example", False),
        ("evil.example:8000", False),
        ("127.0.0.1.evil.example", False),
        ("", False),
        (None, False),
        ("search.example.org", True),
    ],
)
def test_host_allowlist(header, ok):
    assert host_allowed(header, ["search.example.org"]) is ok
    assert host_allowed(header, [], any_host=True)


def test_json_depth_matches_parsed_depth():
    def depth(obj) -> int:
        if isinstance(obj, dict):
            return 1 + max(map(depth, obj.values()), default=0)
        if isinstance(obj, list):
            return 1 + max(map(depth, obj), default=0)
        return 0

    for obj in [1, "x", [], {}, [[1], {"a": [2, {"b": []}]}], {"s": '[[[{{{ " ]]'}, [[[[[[]]]]]]]:
        text = json.dumps(obj)
        assert json_depth(text) == depth(obj) == json_depth(text.encode()), text
    assert json_depth("[" * 100_000) == 100_000


def test_redact_masks_secrets_at_any_depth():
    cfg = {
        "run_dir": "runs/x",
        "token": "abc",
        "labeler": {"token": "def", "port": 1, "share": True},
        "serve": {"token": None},
        "cloud": [{"api_key": "k"}, {"password": ""}],
        "tokens_total": 3,
    }
    out = redact(cfg)
    assert out["token"] == out["labeler"]["token"] == out["cloud"][0]["api_key"] == REDACTED
    assert out["serve"]["token"] is None and out["cloud"][1]["password"] == ""
    assert out["labeler"]["port"] == 1 and out["tokens_total"] == 3 and out["run_dir"] == "runs/x"
    assert cfg["token"] == "abc"  # the input is not modified


def test_redact_overrides_and_hydra_files(tmp_path):
    from pipeline.security import redact_yaml_files

    assert redact(["port=1", "labeler.token=abc", "+serve.api_key=k", "token=null"]) == [
        "port=1",
        f"labeler.token={REDACTED}",
        f"+serve.api_key={REDACTED}",
        "token=null",
    ]
    (tmp_path / "config.yaml").write_text("run_dir: x\nlabeler:\n  token: abc\n")
    (tmp_path / "overrides.yaml").write_text("- labeler.token=abc\n- port=1\n")
    (tmp_path / "hydra.yaml").write_text("hydra:\n  overrides:\n    task:\n    - labeler.token=abc\n")
    assert len(redact_yaml_files(str(tmp_path))) == 3
    assert not any("abc" in f.read_text() for f in tmp_path.iterdir())
