"""Pandas objects in HDF5 files, read with h5py alone, so that reading a file never runs code that is in it.

pandas' own reader (``pd.read_hdf``, through PyTables) unpickles: a text column of a "fixed"-format frame is
stored as pickled Python objects, and PyTables unpickles every node attribute that looks like a pickle. This
module reads the layouts pandas writes with h5py, which never unpickles anything:

- **fixed frames** (group attribute ``pandas_type`` = 'frame'): the datasets ``axis0`` (the column names),
  ``axis1`` (the row labels: only its length is used) and, for each of ``nblocks`` blocks, ``block{i}_items``
  (the block's column names) and ``block{i}_values`` (its values, stored transposed when the attribute
  ``transposed`` is set: one column per item). A name axis has a ``kind``: 'string' axes are fixed-width
  bytes in the group's ``encoding`` (UTF-8), 'integer' and 'float' axes numbers.
- **fixed series** ('series'): the datasets ``index`` and ``values``; the name is the group's ``name``.
- **tables** ('frame_table', 'series_table'): the compound dataset ``table``, with a field ``index`` (not
  read), one field per block of columns (``values_block_N``, a sub-array of one value per column) and one per
  data column. The group's attribute ``values_cols`` lists those fields, ``non_index_axes`` the columns in
  order, and the table's attributes ``<field>_kind`` the column names of each field and ``<field>_dtype``
  their type. A categorical column keeps its categories in the table ``meta/<field>/meta``.

PyTables stored the list-valued attributes as protocol-0 pickles of plain lists. They are decoded by
:func:`~funnelcli.data.safe_pickle.loads_plain`, which refuses every global, so only lists, strings and numbers
can come out; a pickle that names a global (pandas never writes one) makes the file refused as hostile.
Attributes that are not needed (such as ``info``, which may name pandas' date offsets) are never decoded. A
block or column of Python objects (pandas' "fixed" text columns, variable-length or PyTables "object" arrays)
is refused, naming its columns, before any of its bytes is read.

Every problem raises a one-line :class:`~funnelcli.errors.UserError` that names the file and the key.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from funnelcli.data.safe_pickle import ForbiddenGlobal, loads_plain
from funnelcli.errors import UserError

__all__ = ["OutsideTheFile", "local", "read_pandas_group"]

_RESAVE = "save it again with DataFrame.to_hdf(..., format='table')"
_MISSING = object()


@dataclass(frozen=True)
class _Where:
    """The file and key being read, for messages, and the check of the number of columns."""

    shown: str
    key: str
    check_width: Callable[[int], None]

    def error(self, message: str) -> UserError:
        return UserError(" ".join(f"{self.shown}: key {self.key!r} {message}".split()))

    def damaged(self, detail: str) -> UserError:
        return self.error(f"is not a pandas table funnelcli can read ({detail}); {_RESAVE}")

    def outside(self, outside: Exception) -> UserError:
        return self.error(f"is not all in the file: {outside}; funnelcli reads only what the file itself holds")

    def objects(self, names: list[str]) -> UserError:
        shown = ", ".join(repr(name) for name in names[:10])
        if len(names) > 10:
            shown += f" and {len(names) - 10} more"
        return self.error(
            f"stores column(s) {shown} as pickled Python objects (pandas' fixed format does so for text), which "
            f"funnelcli never unpickles; {_RESAVE}, or drop the column(s)"
        )


def read_pandas_group(shown: str, group: Any, key: str, check_width: Callable[[int], None]) -> pd.DataFrame:
    """Read the pandas object in the h5py group ``group`` (``DataFrame.to_hdf``'s key ``key``) as a frame.

    A series becomes a one-column frame named after the series (or the key when it has no name). Text columns
    of tables come back as text, other columns with their own types. ``check_width(n)`` is called with the
    number of columns before any values are read, so that it can refuse a table too wide to read.
    """
    where = _Where(shown, key, check_width)
    kind = _text_attr(where, group, "pandas_type")
    if kind == "frame":
        return _fixed_frame(where, group)
    if kind == "series":
        return _fixed_series(where, group)
    if kind in ("frame_table", "series_table"):
        return _table(where, group)
    raise where.error(f"holds a pandas {kind!r} object, which funnelcli cannot read; {_RESAVE}")


# ------------------------------------------------------------------------------------- links and storage


class OutsideTheFile(Exception):
    """A link or dataset whose reading would make HDF5 open another file, which could be anything: a FIFO that
    blocks forever, a device, a file of someone else's."""


_MAX_LINK_DEPTH = 16  # soft links followed in a row before a path counts as a loop


def local(group: Any, path: str, _depth: int = 0) -> Any:
    """``group[path]``, or None when nothing is there, resolved link by link so that no other file is opened.

    Hard and soft links are followed (soft ones up to a depth, against loops); an external link, and a dataset
    whose values are stored in other files (external storage, virtual datasets), raise
    :class:`OutsideTheFile`, before HDF5 opens any of those files.
    """
    import h5py

    node = group.file if path.startswith("/") else group
    for part in (part for part in path.split("/") if part not in ("", ".")):
        if not isinstance(node, h5py.Group):
            return None
        link = node.get(part, getlink=True)
        if link is None:
            return None
        if isinstance(link, h5py.ExternalLink):
            raise OutsideTheFile(f"{node.name.rstrip('/')}/{part} is a link to {link.path} in the file {link.filename}")
        if isinstance(link, h5py.SoftLink):
            if _depth >= _MAX_LINK_DEPTH:
                return None
            node = local(node, link.path, _depth + 1)
            if node is None:
                return None
        else:
            node = node[part]
    if isinstance(node, h5py.Dataset) and (node.is_virtual or node.external):
        raise OutsideTheFile(f"dataset {node.name} keeps its values in other files")
    return node


# ------------------------------------------------------------------------------------------ attributes


def _attr(where: _Where, node: Any, name: str, default: Any = _MISSING) -> Any:
    """Node attribute ``name`` as a plain Python value, decoding PyTables' pickles without running them."""
    try:
        value = node.attrs[name]
    except KeyError:
        if default is _MISSING:
            raise where.damaged(f"{node.name} has no attribute {name!r}") from None
        return default
    except (OSError, TypeError, ValueError) as error:
        raise where.damaged(f"attribute {name!r} of {node.name} cannot be read: {error}") from None
    return _plain(where, node, name, value)


def _plain(where: _Where, node: Any, name: str, value: Any) -> Any:
    if isinstance(value, bytes | np.bytes_):
        raw = bytes(value)
        # PyTables unpickles every string attribute that ends in "." (except "0."); so does this, safely
        if raw.endswith(b".") and raw not in (b"0", b"0."):
            try:
                return loads_plain(raw)
            except ForbiddenGlobal as refused:
                raise where.error(
                    f"has an attribute {name!r} (of {node.name}) holding a pickle that names the Python global "
                    f"{refused.name}; pandas never writes one there, so the file was made to run code when read. "
                    "funnelcli ran nothing; do not use this file, and recreate the table from data you trust"
                ) from None
            except Exception:  # not a pickle after all: text that happens to end in "."
                pass
        return raw.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    if type(value).__name__ == "Empty":  # h5py.Empty: an attribute without a value
        return None
    return value


def _text_attr(where: _Where, node: Any, name: str, default: Any = _MISSING) -> Any:
    value = _attr(where, node, name, default)
    if value is not default and not isinstance(value, str):
        raise where.damaged(f"attribute {name!r} of {node.name} is not text")
    return value


def _int_attr(where: _Where, node: Any, name: str) -> int:
    value = _attr(where, node, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise where.damaged(f"attribute {name!r} of {node.name} is not a count")
    return value


def _names_attr(where: _Where, node: Any, name: str) -> list[str]:
    """An attribute that lists names (PyTables' pickled list of strings or numbers)."""
    value = _attr(where, node, name)
    if not isinstance(value, list | tuple) or not all(
        isinstance(item, str | int | float) and not isinstance(item, bool) for item in value
    ):
        raise where.damaged(f"attribute {name!r} of {node.name} is not a list of names")
    return [str(item) for item in value]


# ------------------------------------------------------------------------------------------ datasets


def _dataset(where: _Where, group: Any, name: str) -> Any:
    import h5py

    try:
        node = local(group, name)
    except OutsideTheFile as outside:
        raise where.outside(outside) from None
    if not isinstance(node, h5py.Dataset):
        raise where.damaged(f"{group.name} has no dataset {name!r}")
    return node


def _holds_objects(where: _Where, node: Any) -> bool:
    """Whether a dataset holds Python objects or variable-length values (which pandas pickles), by its type
    and attributes alone: nothing of its data is read."""
    import h5py

    dtype = node.dtype
    base = dtype.base
    return (
        dtype.kind == "O"
        or base.kind == "O"
        or h5py.check_vlen_dtype(base) is not None
        or _attr(where, node, "PSEUDOATOM", None) is not None
        or _attr(where, node, "CLASS", None) == "VLARRAY"
    )


def _check_plain_type(where: _Where, dtype: np.dtype, what: str) -> None:
    """Refuse opaque, compound or reference values: pandas writes numbers, booleans and fixed-width bytes."""
    if dtype.kind not in "biufcS":
        raise where.damaged(f"{what} holds {dtype} values")


def _read(where: _Where, node: Any, source: Any = None) -> np.ndarray:
    """The values of a dataset (or of ``source``, a field of it), with h5py's own errors made one line."""
    try:
        return (node if source is None else source)[()]
    except (OSError, TypeError, ValueError, KeyError) as error:
        raise where.damaged(f"{node.name} cannot be read: {error}") from None


def _is_boolean(node: Any) -> bool:
    """PyTables stores numpy booleans as an HDF5 bitfield, which h5py reads as uint8."""
    import h5py

    return node.id.get_type().get_class() == h5py.h5t.BITFIELD


# --------------------------------------------------------------------------------------- fixed format


def _axis_labels(where: _Where, group: Any, name: str) -> list[str]:
    """The labels of a fixed-format name axis (``axis0``, ``block{i}_items``) as strings."""
    variety = _text_attr(where, group, f"{name}_variety", "regular")
    if variety != "regular":
        raise where.error(f"has multi-level column names, which funnelcli cannot read; flatten them, then {_RESAVE}")
    node = _dataset(where, group, name)
    if _holds_objects(where, node):
        raise where.error(
            f"stores its column names as pickled Python objects; give the columns text names, then {_RESAVE}"
        )
    _check_plain_type(where, node.dtype, node.name)
    if node.ndim != 1:
        raise where.damaged(f"{node.name} is not one-dimensional")
    where.check_width(node.shape[0])
    labels = _read(where, node)
    if labels.dtype.kind == "S":
        return _decode(where, group, labels, node.name).tolist()
    return [str(label) for label in labels.tolist()]


def _axis_length(where: _Where, group: Any, name: str) -> int:
    """The length of a fixed-format axis, without reading its labels (which may be pickled objects); a
    multi-level axis is as long as the codes of its first level."""
    multi = _text_attr(where, group, f"{name}_variety", "regular") == "multi"
    node = _dataset(where, group, f"{name}_label0" if multi else name)
    shape = _attr(where, node, "shape", None)
    if shape is not None:  # an empty axis, stored as a one-element placeholder
        return _empty_shape(where, node, shape)[0]
    if node.ndim != 1:
        raise where.damaged(f"{node.name} is not one-dimensional")
    return int(node.shape[0])


def _empty_shape(where: _Where, node: Any, shape: Any) -> tuple[int, ...]:
    """The shape pandas recorded for an empty array (one of its dimensions is 0)."""
    if not isinstance(shape, tuple | list) or not all(isinstance(n, int) and n >= 0 for n in shape) or 0 not in shape:
        raise where.damaged(f"attribute 'shape' of {node.name} is not the shape of an empty array")
    return tuple(shape)


def _block_values(where: _Where, node: Any, n_items: int, n_rows: int) -> np.ndarray:
    """A fixed-format block as (items, rows), or a series' values as (1, rows)."""
    value_type = _text_attr(where, node, "value_type", None)
    shape = _attr(where, node, "shape", None)
    if shape is not None:
        values = np.empty(_empty_shape(where, node, shape), dtype=_plain_dtype(where, node, value_type))
    else:
        _check_plain_type(where, node.dtype.base, node.name)
        values = _read(where, node)
        if _is_boolean(node):
            values = values.astype(bool)
        values = _as_time(where, node, values, value_type)
    if bool(_attr(where, node, "transposed", False)):
        values = values.T
    if values.ndim == 1:
        values = values.reshape(1, -1)
    if values.shape != (n_items, n_rows):
        raise where.damaged(f"{node.name} has shape {values.shape}, not {n_items} column(s) of {n_rows} rows")
    return values


def _fixed_frame(where: _Where, group: Any) -> pd.DataFrame:
    names = _axis_labels(where, group, "axis0")
    n_rows = _axis_length(where, group, "axis1")
    blocks, objects = [], []
    for i in range(_int_attr(where, group, "nblocks")):
        items = _axis_labels(where, group, f"block{i}_items")
        node = _dataset(where, group, f"block{i}_values")
        if _holds_objects(where, node):
            objects.extend(items)
        else:
            blocks.append((items, node))
    if objects:
        raise where.objects(objects)
    _check_unique(where, names)
    columns: dict[str, Any] = {}
    for items, node in blocks:
        values = _block_values(where, node, len(items), n_rows)
        for item, column in zip(items, values, strict=True):
            columns[item] = column
    if sorted(columns) != sorted(names) or len(columns) != len(names):
        raise where.damaged("its blocks do not hold exactly the columns in axis0")
    return _frame([(name, columns[name]) for name in names], n_rows)


def _fixed_series(where: _Where, group: Any) -> pd.DataFrame:
    name = _attr(where, group, "name", None)
    column = str(name) if name is not None else where.key.rsplit("/", 1)[-1]
    node = _dataset(where, group, "values")
    if _holds_objects(where, node):
        raise where.objects([column])
    where.check_width(1)
    n_rows = _axis_length(where, group, "index")
    return _frame([(column, _block_values(where, node, 1, n_rows)[0])], n_rows)


# ------------------------------------------------------------------------------------------ table format


@dataclass(frozen=True)
class _Field:
    """One field of a pandas table: its name, the columns it holds, and their type as pandas recorded it."""

    name: str
    columns: list[str]
    dtype: str
    meta: Any


def _table(where: _Where, group: Any) -> pd.DataFrame:
    table = _dataset(where, group, "table")
    if table.dtype.names is None or table.ndim != 1:
        raise where.damaged(f"{table.name} is not a table of records")
    fields: list[_Field] = []
    objects: list[str] = []
    for name in _names_attr(where, group, "values_cols"):
        if name not in table.dtype.names:
            raise where.damaged(f"{table.name} has no field {name!r}")
        field = _Field(
            name,
            _names_attr(where, table, f"{name}_kind"),
            _text_attr(where, table, f"{name}_dtype"),
            _attr(where, table, f"{name}_meta", None),
        )
        dtype = table.dtype.fields[name][0]
        width = int(np.prod(dtype.shape)) if dtype.shape else 1
        if width != len(field.columns) or len(dtype.shape) > 1:
            raise where.damaged(f"field {name!r} holds {width} value(s) per row for {len(field.columns)} column(s)")
        if _is_object_type(dtype.base):
            objects.extend(field.columns)
        else:
            _check_plain_type(where, dtype.base, f"field {name!r}")
            fields.append(field)
    order = _column_order(where, group, [column for field in fields for column in field.columns] + objects)
    where.check_width(len(order))
    if objects:
        raise where.objects(objects)
    _check_unique(where, order)
    n_rows = int(table.shape[0])
    columns: dict[str, Any] = {}
    for field in fields:
        values = _read(where, table, table.fields(field.name))
        values = values.reshape(n_rows, len(field.columns))
        for j, column in enumerate(field.columns):
            columns[column] = _table_column(where, group, table, field, values[:, j])
    if _text_attr(where, group, "table_type", "") in ("appendable_multiframe", "appendable_multiseries"):
        # The levels of a MultiIndex are stored as data columns; pandas turns them back into the row index
        levels = set(_names_attr(where, group, "levels"))
        order = [column for column in order if column not in levels]
    missing = [column for column in order if column not in columns]
    if missing:
        raise where.damaged(f"no field holds column(s) {', '.join(map(repr, missing))}")
    if _text_attr(where, group, "pandas_type") == "series_table" and order == ["values"]:
        return _frame([(where.key.rsplit("/", 1)[-1], columns["values"])], n_rows)
    return _frame([(column, columns[column]) for column in order], n_rows)


def _check_unique(where: _Where, names: list[str]) -> None:
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        raise where.error(
            f"has duplicate column name(s) {', '.join(map(repr, repeated))}; give every column a unique name"
        )


def _is_object_type(dtype: np.dtype) -> bool:
    import h5py

    return dtype.kind == "O" or h5py.check_vlen_dtype(dtype) is not None


def _column_order(where: _Where, group: Any, found: list[str]) -> list[str]:
    """The columns in the order of the frame: ``non_index_axes`` = [(1, [names...])], else as found."""
    axes = _attr(where, group, "non_index_axes", None)
    if axes is None:
        return found
    if not (
        isinstance(axes, list | tuple)
        and len(axes) == 1
        and isinstance(axes[0], list | tuple)
        and len(axes[0]) == 2
        and isinstance(axes[0][1], list | tuple)
    ):
        raise where.damaged("attribute 'non_index_axes' is not a list of column names")
    order = [str(name) for name in axes[0][1]]
    if sorted(order) != sorted(found):
        raise where.damaged("attribute 'non_index_axes' does not list the table's columns")
    return order


_TIME = re.compile(r"^(datetime64|timedelta64)(?:\[(\w+)(?:,[^\]]*)?\])?$")


def _table_column(where: _Where, group: Any, table: Any, field: _Field, values: np.ndarray) -> Any:
    """One column of a table field as pandas wrote it: text decoded, booleans, times, categories restored."""
    kind = field.dtype
    if field.meta == "category":
        return _categorical(where, group, field, values)
    if values.dtype.kind == "S":
        nan_rep = _attr(where, table, f"{field.name}_nan_rep", None)
        if not isinstance(nan_rep, str):
            nan_rep = _attr(where, group, "nan_rep", None)
        text = _decode(where, group, values, f"field {field.name!r}").astype(object)
        text[text == (nan_rep if isinstance(nan_rep, str) else "nan")] = np.nan
        return pd.array(text, dtype="str") if field.meta == "str" else text
    if kind.startswith("bool"):
        return values.astype(bool)
    if _TIME.match(kind):
        return _as_time(where, table, values, kind)
    return values


def _categorical(where: _Where, group: Any, field: _Field, codes: np.ndarray) -> pd.Categorical:
    """A categorical column: integer codes in the table, the categories in the series ``meta/<field>/meta``."""
    if codes.dtype.kind not in "iu":
        raise where.damaged(f"the codes of categorical field {field.name!r} are not integers")
    import h5py

    try:
        meta = local(group, f"meta/{field.name}/meta")
    except OutsideTheFile as outside:
        raise where.outside(outside) from None
    if not isinstance(meta, h5py.Group) or "pandas_type" not in meta.attrs:
        raise where.damaged(f"categorical field {field.name!r} has no categories")
    categories = _table(_Where(where.shown, f"{where.key}/meta/{field.name}/meta", lambda n: None), meta)
    try:
        return pd.Categorical.from_codes(codes.astype(np.int64), categories=categories.iloc[:, 0].to_numpy())
    except (ValueError, TypeError) as error:
        raise where.damaged(f"categorical field {field.name!r}: {error}") from None


# ------------------------------------------------------------------------------------------- values


def _decode(where: _Where, group: Any, values: np.ndarray, what: str) -> np.ndarray:
    """Fixed-width bytes as text, in the encoding pandas recorded (UTF-8 unless it says otherwise)."""
    encoding = _text_attr(where, group, "encoding", None) or "UTF-8"
    try:
        return np.char.decode(values, encoding)
    except (UnicodeDecodeError, LookupError) as error:
        raise where.damaged(f"{what} holds text that is not {encoding}: {error}") from None


def _plain_dtype(where: _Where, node: Any, value_type: Any) -> np.dtype:
    try:
        dtype = np.dtype(value_type if isinstance(value_type, str) else "float64")
    except TypeError:
        raise where.damaged(f"attribute 'value_type' of {node.name} is not a numpy type") from None
    if dtype.kind not in "mM":
        _check_plain_type(where, dtype, node.name)
    return dtype


def _as_time(where: _Where, node: Any, values: np.ndarray, value_type: Any) -> np.ndarray:
    """Integers pandas wrote for datetime64 or timedelta64 values, as those values (a time zone is dropped:
    the values are UTC)."""
    match = _TIME.match(value_type) if isinstance(value_type, str) else None
    if match is None:
        return values
    if values.dtype != np.int64:
        raise where.damaged(f"{node.name} holds {values.dtype} values for {value_type} times")
    unit = match.group(2) or "ns"
    try:
        return values.view(f"{'M' if match.group(1) == 'datetime64' else 'm'}8[{unit}]")
    except TypeError:
        raise where.damaged(f"{node.name} has times in an unknown unit {unit!r}") from None


def _frame(columns: list[tuple[str, Any]], n_rows: int) -> pd.DataFrame:
    """A frame of the given columns, in order, duplicate names kept (read_table reports them)."""
    frame = pd.DataFrame({i: column for i, (_, column) in enumerate(columns)}, index=pd.RangeIndex(n_rows))
    frame.columns = [name for name, _ in columns]
    return frame
