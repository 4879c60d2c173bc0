"""Input sources, decoding and table helpers."""
