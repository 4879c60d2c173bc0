"""Where a k-means shard's rows come from and where they live.

A :class:`ShardSource` names Parquet slices or a ``.npy`` slice; :func:`iter_source` reads it in
blocks. A shard keeps its rows in memory (:class:`MemoryRows`) or, out of core, spills them once
to a local ``.npy`` (:class:`SpillWriter`) and streams them in chunks through one reusable buffer
(:class:`SpilledRows`); both yield the same blocks. :func:`npy_header` / :func:`write_npy_blocks`
write 1-D ``.npy`` files block by block (a step's parts and their merge).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class ShardSource:
    """Where a shard's rows come from: Parquet slices ``(file, start, stop)`` or a ``.npy`` slice.

    ``drop_ids_path``: optional Parquet file with an ``id`` column; those rows are skipped.
    """

    kind: str  # "parquet" | "npy"
    pieces: Sequence[tuple[str, int, int]] = field(default_factory=tuple)
    drop_ids_path: str | None = None


def _read_npy_rows(path: str, start: int, stop: int, out: np.ndarray) -> None:
    """Read rows ``start:stop`` of a 2-D C-order float32 ``.npy`` straight into ``out`` (no mmap copy)."""
    with open(path, "rb") as fh:
        major, _ = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(fh)
        if len(shape) != 2 or fortran or dtype != np.float32:
            raise ValueError(f"{path}: need a 2-D C-order float32 array, got {shape} {dtype} fortran={fortran}")
        fh.seek(fh.tell() + start * shape[1] * 4)
        fh.readinto(memoryview(out).cast("B"))


def _npy_shape(path: str) -> tuple[int, int]:
    return tuple(np.load(path, mmap_mode="r").shape)  # type: ignore[return-value]


def source_rows(source: ShardSource) -> int:
    return sum(b - a for _, a, b in source.pieces)


def iter_source(source: ShardSource, npy_rows: int = 65536) -> Iterator[tuple[np.ndarray, pa.Array | None]]:
    """Blocks ``(rows (b, D) float32, ids or None)`` of ``source`` in order: one Parquet row group
    (less the dropped ids) or ``npy_rows`` rows of a ``.npy`` at a time."""
    if source.kind == "npy":
        for f, a, b in source.pieces:
            d = _npy_shape(f)[1]
            for lo in range(a, b, npy_rows):
                out = np.empty((min(b, lo + npy_rows) - lo, d), dtype=np.float32)
                _read_npy_rows(f, lo, lo + len(out), out)
                yield out, None
        return
    if source.kind != "parquet":
        raise ValueError(f"unknown shard source kind {source.kind!r}")
    import fsspec
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipeline.io.tables import EMBEDDING, arrow_to_embeddings

    drop = None
    if source.drop_ids_path:
        with fsspec.open(source.drop_ids_path, "rb") as fh:
            drop = pq.read_table(fh, columns=["id"]).column("id").combine_chunks()
    for f, start, stop in source.pieces:
        with fsspec.open(f, "rb") as fh:
            pf = pq.ParquetFile(fh)
            first = 0
            for rg in range(pf.metadata.num_row_groups):
                n_rg = pf.metadata.row_group(rg).num_rows
                lo, hi = max(start, first), min(stop, first + n_rg)
                if lo < hi:
                    t = pf.read_row_group(rg, columns=["id", EMBEDDING]).slice(lo - first, hi - lo)
                    if drop is not None and len(drop):
                        t = t.filter(pc.invert(pc.is_in(t.column("id"), value_set=drop)))
                    yield arrow_to_embeddings(t.column(EMBEDDING)), t.column("id").combine_chunks()
                first += n_rg


def prepare_rows(rows: np.ndarray, metric: str, in_place: bool) -> tuple[np.ndarray, np.ndarray]:
    """Checked (and, for cosine, L2-normalised) rows and their squared norms ``||x||^2``."""
    if rows.ndim != 2:
        raise ValueError(f"shard rows must be 2-D (n, D), got shape {rows.shape}")
    if not np.isfinite(rows).all():
        raise ValueError("embeddings contain NaN or inf")
    if metric == "cosine":
        norms = np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        rows = np.divide(rows, norms, out=rows) if in_place and rows.flags.writeable else rows / norms
    return rows, np.einsum("ij,ij->i", rows, rows)


def npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def write_npy_blocks(fh: BinaryIO, dtype: Any, n: int, blocks: Iterable[np.ndarray]) -> None:
    """Write a 1-D ``.npy`` of ``n`` items of ``dtype`` from ``blocks`` (never the whole array at once)."""
    fh.write(npy_header((n,), dtype))
    written = 0
    for block in blocks:
        fh.write(np.ascontiguousarray(block, dtype=dtype).tobytes())
        written += len(block)
    if written != n:
        raise RuntimeError(f"wrote {written} items to a .npy declared with {n}")


def _read_exact(fh: BinaryIO, out: np.ndarray) -> None:
    view, got = memoryview(out).cast("B"), 0
    while got < len(view):
        n = fh.readinto(view[got:])
        if not n:
            raise EOFError("spilled rows file is shorter than expected")
        got += n


def blocks_of(n: int, step: int) -> Iterator[tuple[int, int]]:
    for a in range(0, n, step):
        yield a, min(n, a + step)


class MemoryRows:
    """Rows held in memory; :meth:`blocks` yields views."""

    def __init__(self, x: np.ndarray):
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    @property
    def dim(self) -> int:
        return int(self.x.shape[1])

    def blocks(self, step: int) -> Iterator[tuple[int, np.ndarray]]:
        for a, b in blocks_of(len(self.x), step):
            yield a, self.x[a:b]

    def take(self, positions: np.ndarray) -> np.ndarray:
        return self.x[np.asarray(positions, dtype=np.int64)]


class SpilledRows:
    """Rows in a local float32 ``.npy``, read in blocks with explicit reads into one reusable buffer.

    Not a memory map: file-backed pages of a map count in the process's RSS. A block yielded by
    :meth:`blocks` is overwritten by the next one.
    """

    def __init__(self, path: str, n: int, dim: int, buffer: np.ndarray):
        self.path, self.n, self._dim, self.buffer = path, int(n), int(dim), buffer
        with open(path, "rb") as fh:
            np.lib.format.read_magic(fh)
            np.lib.format.read_array_header_1_0(fh)
            self.data_offset = fh.tell()

    def __len__(self) -> int:
        return self.n

    @property
    def dim(self) -> int:
        return self._dim

    def blocks(self, step: int) -> Iterator[tuple[int, np.ndarray]]:
        step = max(1, min(step, len(self.buffer)))
        with open(self.path, "rb", buffering=0) as fh:
            fh.seek(self.data_offset)
            for a, b in blocks_of(self.n, step):
                view = self.buffer[: b - a]
                _read_exact(fh, view)
                yield a, view

    def take(self, positions: np.ndarray) -> np.ndarray:
        """Rows at ``positions``: one seek per row for a few, else one pass over the file."""
        positions = np.asarray(positions, dtype=np.int64)
        out = np.empty((len(positions), self._dim), dtype=np.float32)
        if len(positions) <= 256:
            with open(self.path, "rb", buffering=0) as fh:
                for i, p in enumerate(positions):
                    fh.seek(self.data_offset + int(p) * self._dim * 4)
                    _read_exact(fh, out[i])
            return out
        order = np.argsort(positions, kind="stable")
        wanted = positions[order]
        for a, block in self.blocks(len(self.buffer)):
            lo, hi = np.searchsorted(wanted, [a, a + len(block)])
            out[order[lo:hi]] = block[wanted[lo:hi] - a]
        return out


class SpillWriter:
    """Appends float32 row blocks to ``<folder>/<name>.npy``; the header is fixed up on close."""

    def __init__(self, path: str, capacity: int):
        self.path, self.capacity, self.n, self.dim = path, int(capacity), 0, None
        self.fh = open(path, "wb")  # noqa: SIM115 - closed by finish()

    def append(self, rows: np.ndarray) -> None:
        if self.dim is None:
            self.dim = int(rows.shape[1])
            self.header = npy_header((self.capacity, self.dim), np.float32)
            self.fh.write(self.header)
        self.fh.write(np.ascontiguousarray(rows, dtype=np.float32).tobytes())
        self.n += len(rows)

    def finish(self) -> tuple[int, int]:
        """(rows written, width); rewrites the header with the final row count."""
        if self.dim is None:
            self.dim = 0
            self.header = npy_header((self.capacity, 0), np.float32)
            self.fh.write(self.header)
        header = npy_header((self.n, self.dim), np.float32)
        if len(header) != len(self.header):  # numpy pads the header so that its first axis can change
            raise RuntimeError("spill header changed size")
        self.fh.seek(0)
        self.fh.write(header)
        self.fh.close()
        return self.n, self.dim
