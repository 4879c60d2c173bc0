"""Row filters over the carried columns of an index (``date`` range, ``product == ...``, any column).

A filter is a mapping ``column -> condition``; all conditions must hold (logical AND):

- ``{"product": "S2"}``                      equality
- ``{"label": ["forest", "river"]}``         membership
- ``{"date": {"gte": "2020-01-01", "lt": "2021-01-01"}}``  comparisons
  (operators ``eq ne gt gte lt lte in not_in``; several operators on one column are ANDed)

Values are cast to the column's Arrow type, so ISO strings work against ``date32``/``timestamp``
columns. A value asked for by equality or membership (``"S2"``, ``[..]``, ``eq``, ``in``) that no
row holds is an error naming the column's values (a typo would otherwise return nothing).
Evaluation is vectorised with ``pyarrow.compute`` and returns a boolean mask over rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

Filters = Mapping[str, Any]

_COMPARE = {
    "eq": pc.equal,
    "ne": pc.not_equal,
    "gt": pc.greater,
    "gte": pc.greater_equal,
    "lt": pc.less,
    "lte": pc.less_equal,
}


class FilterError(ValueError):
    """A filter names an unknown column or operator, or a value of the wrong type."""


def _cast(value: Any, column: str, type_: pa.DataType) -> pa.Scalar:
    if (pa.types.is_string(type_) or pa.types.is_large_string(type_)) and not isinstance(value, str):
        raise FilterError(f"filter value {value!r} does not fit column {column!r} of type {type_} (give a string)")
    try:
        return pa.scalar(value).cast(type_)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise FilterError(f"filter value {value!r} does not fit column {column!r} of type {type_}") from exc


def _require_present(col: pa.ChunkedArray | pa.Array, column: str, values: pa.Array) -> None:
    """Refuse values that no row of ``col`` holds, naming up to 10 of the values it does hold."""
    known = pc.unique(col).drop_null()
    present = pc.is_in(values, value_set=known).to_numpy(zero_copy_only=False)
    if present.all():
        return
    missing = values[int(np.argmin(present))].as_py()
    shown = pc.take(known, pc.array_sort_indices(known)[:10]).to_pylist()
    more = f" and {len(known) - len(shown)} more" if len(known) > len(shown) else ""
    raise FilterError(f"unknown value {missing!r} for filter column {column!r}: no row has it; values: {shown}{more}")


def _isin(col: pa.ChunkedArray | pa.Array, column: str, values: Any) -> tuple[pa.ChunkedArray, pa.Array]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise FilterError(f"'in' filter on {column!r} needs a list of values, got {values!r}")
    value_set = pa.array([_cast(v, column, col.type).as_py() for v in values], type=col.type)
    return pc.is_in(col, value_set=value_set), value_set


def _condition(col: pa.ChunkedArray | pa.Array, column: str, cond: Any) -> pa.ChunkedArray:
    """Mask of one column's condition; values wanted by equality or membership must exist."""
    if not isinstance(cond, Mapping):
        cond = {"in": cond} if isinstance(cond, (list, tuple)) else {"eq": cond}
    if not cond:
        raise FilterError(f"empty condition for column {column!r}")
    parts = []
    for op, value in cond.items():
        if op in ("eq", "in"):
            if op == "eq":
                wanted = pa.array([_cast(value, column, col.type).as_py()], type=col.type)
                mask = pc.is_in(col, value_set=wanted)
            else:
                mask, wanted = _isin(col, column, value)
            _require_present(col, column, wanted)
            parts.append(mask)
        elif op in _COMPARE:
            parts.append(_COMPARE[op](col, _cast(value, column, col.type)))
        elif op == "not_in":
            parts.append(pc.invert(_isin(col, column, value)[0]))
        else:
            raise FilterError(
                f"unknown filter operator {op!r} on {column!r}; use one of {sorted([*_COMPARE, 'in', 'not_in'])}"
            )
    out = parts[0]
    for p in parts[1:]:
        out = pc.and_(out, p)
    return out


def filter_values(table: pa.Table, columns: list[str], max_values: int) -> dict[str, dict[str, Any]]:
    """Per column: ``type``, ``n_distinct``, up to ``max_values`` sorted distinct ``values`` (None
    when there are more, or for float columns), and ``min``/``max`` for ordered columns."""
    out: dict[str, dict[str, Any]] = {}
    for name in columns:
        col = table.column(name)
        if not (pa.types.is_primitive(col.type) or pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            continue
        known = pc.unique(col).drop_null()
        info: dict[str, Any] = {"type": str(col.type), "n_distinct": len(known), "values": None}
        if len(known) <= max_values and not pa.types.is_floating(col.type):
            info["values"] = pc.take(known, pc.array_sort_indices(known)).to_pylist()
        if len(known) and not pa.types.is_boolean(col.type):
            bounds = pc.min_max(known)
            info["min"], info["max"] = bounds["min"].as_py(), bounds["max"].as_py()
        out[name] = info
    return out


def filter_mask(table: pa.Table, filters: Filters | None) -> np.ndarray | None:
    """Boolean mask (N,) of rows of ``table`` meeting every condition; ``None`` when no filter.

    Nulls never match. Raises :class:`FilterError` for unknown columns, operators or bad values.
    """
    if not filters:
        return None
    if not isinstance(filters, Mapping):
        raise FilterError(f"filters must be a mapping column -> condition, got {type(filters).__name__}")
    mask = np.ones(table.num_rows, dtype=bool)
    for column, cond in filters.items():
        if column not in table.column_names:
            raise FilterError(f"unknown filter column {column!r}; filterable columns: {table.column_names}")
        result = _condition(table.column(column), column, cond)
        mask &= np.asarray(pc.fill_null(result, False).to_numpy(zero_copy_only=False), dtype=bool)
    return mask


__all__ = ["Filters", "FilterError", "filter_mask", "filter_values"]
