"""Unpickling that cannot run code: every global a pickle names is looked up in an explicit list, or refused.

A pickle is a program: its GLOBAL opcodes import any callable by name and its REDUCE opcodes call it, which is
how a file can run ``os.system`` when it is loaded. :class:`RestrictedUnpickler` overrides ``find_class``, the
one place where the unpickler turns a name into an object (GLOBAL, STACK_GLOBAL, INST and the EXT opcodes all
go through it), so a pickle can only build plain values (None, booleans, numbers, strings, bytes, lists,
tuples, dicts, sets) and call what the list maps its names to. Two lists are used:

- :func:`loads_plain`: no globals at all. PyTables stores non-scalar node attributes (pandas' lists of column
  names) as protocol-0 pickles of plain lists; they decode to the same lists, and nothing else can come out.
- :func:`load_dataframe`: the globals a pandas ``DataFrame`` pickle names (numpy arrays and dtypes, pandas'
  frame, block manager, blocks and indexes, including the module paths of pandas 0.x and Python 2), for the
  GAS file of the MAF archive. The pandas names map to small record classes of this module, never to pandas
  itself: the unpickled tree is checked (block shapes, column positions, dtypes) and only then turned into a
  ``DataFrame``, so no pandas internals run on unchecked data. numpy builds the arrays, and checks them.
"""

from __future__ import annotations

import codecs
import io
import pickle
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

import numpy as np

__all__ = ["ForbiddenGlobal", "NotATable", "RestrictedUnpickler", "load_dataframe", "loads_plain"]


class ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle names a global that is not on the list; ``name`` is ``"module.qualname"``."""

    def __init__(self, module: str, name: str, why: str = "which is not allowed"):
        self.name = f"{module}.{name}"
        super().__init__(f"the pickle names the Python global {self.name}, {why}")


class NotATable(pickle.UnpicklingError):
    """The pickle holds only allowed objects, but not a table of the expected shape."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that maps each global name through ``allowed`` and refuses every other one."""

    def __init__(self, file: BinaryIO, allowed: Mapping[tuple[str, str], Any], **options: Any):
        super().__init__(file, **options)
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except (KeyError, TypeError):
            raise ForbiddenGlobal(module, name) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("the pickle refers to a persistent object, which is not allowed")


def loads_plain(data: bytes) -> Any:
    """Decode a pickle of plain values (lists, tuples, dicts, strings, numbers, None); any global is refused.

    Raises :class:`ForbiddenGlobal` for a global, and whatever the unpickler raises for bytes that are not a
    pickle (``UnpicklingError``, ``EOFError``, ``ValueError``...).
    """
    return RestrictedUnpickler(io.BytesIO(data), {}, encoding="utf-8", errors="replace").load()


# ------------------------------------------------------------------------------------------ pandas frames


def load_dataframe(handle: BinaryIO) -> Any:
    """Read a pickled pandas ``DataFrame`` of numeric columns without running any code named in the file.

    Accepts frames pickled by pandas 0.14 to 3.x under Python 2 or 3, with any protocol. Raises
    :class:`ForbiddenGlobal` naming the first global that is not on the list, and :class:`NotATable` when the
    objects do not form a frame of numeric blocks.
    """
    import pandas as pd

    # latin1: numpy arrays pickled by Python 2 carry their bytes as 8-bit strings, which must round-trip
    result = RestrictedUnpickler(handle, _frame_globals(), encoding="latin1").load()
    if not isinstance(result, _Frame):
        raise NotATable(f"the pickle holds a {type(result).__name__}, not a pandas DataFrame")
    names, columns = result.columns()
    frame = pd.DataFrame(dict(enumerate(columns)), copy=False)
    frame.columns = names
    return frame


_MAX_COLUMNS = 1_000_000  # a bound on the column names made, whatever a crafted RangeIndex says


class _Call:
    """A callable on the list, wrapped so that the pickle cannot change it (BUILD on a plain Python function
    could set its ``__defaults__``): its only state is the function, and BUILD on it is refused."""

    __slots__ = ("_function",)

    def __init__(self, function: Callable[..., Any]):
        object.__setattr__(self, "_function", function)

    def __call__(self, *args: Any) -> Any:
        return self._function(*args)

    def __setstate__(self, state: Any) -> None:
        raise NotATable("the pickle tries to change a function")


class _Record:
    """A stand-in for a pandas class: created without running anything, it keeps what the pickle gives it."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Record:
        record = object.__new__(cls)
        record.args, record.state = args, None
        return record

    def __init__(self, *args: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _Frame(_Record):
    """``DataFrame``: its state is a dict holding the block manager as ``_mgr`` (pandas >= 1.1) or ``_data``."""

    def columns(self) -> tuple[list[str], list[np.ndarray]]:
        state = self.state
        if not isinstance(state, dict):
            raise NotATable("the DataFrame's state is not a dict")
        manager = state.get("_mgr", state.get("_data"))
        if not isinstance(manager, _Manager):
            raise NotATable("the DataFrame has no block manager")
        return manager.columns()


class _Manager(_Record):
    """``BlockManager``: built from ``(blocks, axes)`` (pandas >= 2), or given the state pandas 0.14.1 to 1.x
    wrote, whose fourth item is ``{"0.14.1": {"axes": [...], "blocks": [{"values", "mgr_locs"}, ...]}}``."""

    def columns(self) -> tuple[list[str], list[np.ndarray]]:
        if self.state is not None:
            state = self.state
            if not (isinstance(state, tuple) and len(state) >= 4 and isinstance(state[3], dict)):
                raise NotATable("the block manager's state is not one pandas 0.14.1 or later wrote")
            layout = state[3].get("0.14.1")
            if not isinstance(layout, dict) or not isinstance(layout.get("blocks"), list | tuple):
                raise NotATable("the block manager's state is not one pandas 0.14.1 or later wrote")
            axes = layout.get("axes")
            blocks = []
            for block in layout["blocks"]:
                if not isinstance(block, dict):
                    raise NotATable("a block is not a dict")
                blocks.append((block.get("values"), block.get("mgr_locs")))
        elif len(self.args) >= 2 and isinstance(self.args[0], list | tuple):
            axes = self.args[1]
            if not all(isinstance(block, _Block) for block in self.args[0]):
                raise NotATable("a block of the frame is not a pandas block")
            blocks = [(block.values, block.placement) for block in self.args[0]]
        else:
            raise NotATable("the block manager has neither blocks nor a state")
        if not isinstance(axes, list | tuple) or len(axes) != 2:
            raise NotATable("the frame does not have two axes")
        labels = _index_values(axes[0])
        if len(labels) > _MAX_COLUMNS:
            raise NotATable(f"the frame has {len(labels)} columns")
        names = [str(name) for name in labels]
        n_rows = len(_index_values(axes[1]))
        return names, _place(blocks, len(names), n_rows)


class _Block(_Record):
    """What ``_unpickle_block(values, placement, ndim)`` was given."""

    def __init__(self, values: Any = None, placement: Any = None, ndim: Any = 2) -> None:
        self.values, self.placement = values, placement


class _Index(_Record):
    """``Index``, ``RangeIndex``, ``Int64Index``...: only reached through ``_new_Index(cls, state)``."""


class _RangeIndex(_Index):
    pass


class _Strings(_Record):
    """``ArrowStringArray`` or ``StringArray``: its state holds a checked Arrow array or an object ndarray."""

    def values(self) -> list[Any]:
        state = self.state
        if isinstance(state, dict):
            for key in ("_pa_array", "_ndarray"):
                if key in state:
                    return _index_values(state[key])
        raise NotATable("a string array has no values")


class _Dtype(_Record):
    """``StringDtype``: what it says is of no use here."""


def _new_index(cls: Any, state: Any) -> _Index:
    """``_new_Index(cls, d)``: keep the class (a record class of this module, or refused) and its state."""
    if not (isinstance(cls, type) and issubclass(cls, _Index)) or not isinstance(state, dict):
        raise NotATable("an index of the frame is not a pandas Index")
    index = cls.__new__(cls)
    index.state = state
    return index


def _index_values(axis: Any) -> list[Any]:
    """The labels of an axis as a list (a RangeIndex's only as many as it spans)."""
    if isinstance(axis, _RangeIndex):
        state = axis.state if isinstance(axis.state, dict) else {}
        start, stop, step = (state.get(key, default) for key, default in (("start", 0), ("stop", 0), ("step", 1)))
        if not all(isinstance(value, int) for value in (start, stop, step)) or step == 0:
            raise NotATable("a RangeIndex has a start, stop or step that is not an integer")
        return range(start, stop, step)  # type: ignore[return-value]
    if isinstance(axis, _Index):
        data = axis.state.get("data") if isinstance(axis.state, dict) else None
        return _index_values(data)
    if isinstance(axis, _Strings):
        return axis.values()
    if isinstance(axis, np.ndarray) and axis.ndim == 1:
        return axis.tolist()
    if _is_arrow_strings(axis):
        return axis.to_pylist()
    raise NotATable(f"an axis of the frame holds a {type(axis).__name__}")


def _place(blocks: list[tuple[Any, Any]], n_columns: int, n_rows: int) -> list[np.ndarray]:
    """The frame's columns in order, from blocks of (values, positions), each position used exactly once."""
    columns: list[np.ndarray | None] = [None] * n_columns
    for values, placement in blocks:
        if not isinstance(values, np.ndarray) or values.dtype.kind not in "biuf":
            kind = values.dtype if isinstance(values, np.ndarray) else type(values).__name__
            raise NotATable(f"a block of the frame holds {kind} values, not numbers")
        if values.ndim == 1:
            values = values.reshape(1, -1)
        positions = _positions(placement, n_columns)
        if values.ndim != 2 or values.shape != (len(positions), n_rows):
            raise NotATable(f"a block of shape {values.shape} does not fit {len(positions)} column(s) of {n_rows} rows")
        for row, position in enumerate(positions):
            if columns[position] is not None:
                raise NotATable(f"column {position} of the frame is given twice")
            columns[position] = values[row]
    if any(column is None for column in columns):
        raise NotATable("some columns of the frame are in no block")
    return columns  # type: ignore[return-value]


def _positions(placement: Any, n_columns: int) -> list[int]:
    """A block's column positions, from a slice or an integer array, all within the frame's columns."""
    if isinstance(placement, slice):
        if not all(isinstance(part, int | None) for part in (placement.start, placement.stop, placement.step)):
            raise NotATable("a block's placement is not a slice of integers")
        start = 0 if placement.start is None else placement.start
        stop = n_columns if placement.stop is None else placement.stop
        step = 1 if placement.step is None else placement.step
        if start < 0 or stop > n_columns or step < 1:
            raise NotATable("a block's placement lies outside the frame's columns")
        return list(range(start, stop, step))
    if isinstance(placement, np.ndarray) and placement.ndim == 1 and placement.dtype.kind in "iu":
        positions = placement.tolist()
    elif isinstance(placement, list) and all(isinstance(value, int) for value in placement):
        positions = placement
    else:
        raise NotATable("a block's placement is neither a slice nor integers")
    if any(not 0 <= position < n_columns for position in positions):
        raise NotATable("a block's placement lies outside the frame's columns")
    return positions


# ------------------------------------------------------------------------------------------- the list


def _frame_globals() -> dict[tuple[str, str], Any]:
    """Every global a pickled DataFrame of numbers names, under every module path pandas and numpy used."""
    allowed: dict[tuple[str, str], Any] = {}

    def allow(target: Any, *names: str) -> None:
        for name in names:
            module, _, attribute = name.rpartition(".")
            allowed[(module, attribute)] = target

    probe = np.zeros(1)
    allow(_Call(_reconstruct), "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct")
    allow(_Call(probe.__reduce_ex__(5)[0]), "numpy.core.numeric._frombuffer", "numpy._core.numeric._frombuffer")
    allow(_Call(np.float64(0).__reduce__()[0]), "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar")
    allow(np.ndarray, "numpy.ndarray")
    allow(np.dtype, "numpy.dtype")
    for builtins in ("builtins", "__builtin__"):
        allow(slice, f"{builtins}.slice")
        allow(bytearray, f"{builtins}.bytearray")
        allow(object, f"{builtins}.object")
    allow(_Call(_reconstructor), "copyreg._reconstructor", "copy_reg._reconstructor")
    allow(_Call(_encode), "_codecs.encode")
    allow(_Frame, "pandas.DataFrame", "pandas.core.frame.DataFrame")
    allow(_Manager, "pandas.core.internals.BlockManager", "pandas.core.internals.managers.BlockManager")
    allow(_Block, "pandas._libs.internals._unpickle_block", "pandas.core.internals.blocks.new_block")
    allow(_Call(_new_index), *(f"{module}._new_Index" for module in _INDEX_MODULES))
    allow(_Index, "pandas.Index", *(f"{module}.Index" for module in _INDEX_MODULES))
    for numeric in ("Int64Index", "UInt64Index", "Float64Index", "NumericIndex"):
        allow(_Index, *(f"{module}.{numeric}" for module in (*_INDEX_MODULES, *_NUMERIC_INDEX_MODULES)))
    allow(_RangeIndex, "pandas.RangeIndex", *(f"{module}.RangeIndex" for module in (*_INDEX_MODULES, *_RANGE_MODULES)))
    allow(_Strings, "pandas.arrays.ArrowStringArray", "pandas.core.arrays.string_arrow.ArrowStringArray")
    allow(_Strings, "pandas.arrays.StringArray", "pandas.core.arrays.string_.StringArray")
    allow(_Dtype, "pandas.StringDtype", "pandas.core.arrays.string_.StringDtype")
    allow(_Call(_arrow_strings), "pyarrow.lib._restore_array")
    allow(_Call(_arrow_alias), "pyarrow.lib.type_for_alias")
    allow(_Call(_arrow_buffer), "pyarrow.lib.py_buffer")
    return allowed


# Where pandas kept Index, _new_Index and the numeric indexes: 0.15-0.17, 0.18-0.19, 0.20 onwards
_INDEX_MODULES = ("pandas.core.index", "pandas.indexes.base", "pandas.core.indexes.base")
_NUMERIC_INDEX_MODULES = ("pandas.indexes.numeric", "pandas.core.indexes.numeric")
_RANGE_MODULES = ("pandas.indexes.range", "pandas.core.indexes.range")


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's ``_reconstruct``, for plain arrays only (a subclass could be anything)."""
    if subtype is not np.ndarray:
        raise ForbiddenGlobal("numpy.core.multiarray", "_reconstruct", "called for something other than an ndarray")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor(cls, object, None)``, as Python 2 pickled pandas objects, for the records here."""
    if not (isinstance(cls, type) and issubclass(cls, _Record)) or base is not object or state is not None:
        raise ForbiddenGlobal("copyreg", "_reconstructor", "called for something other than a pandas frame")
    return cls.__new__(cls)


def _encode(text: Any, encoding: Any = "latin1") -> bytes:
    """``_codecs.encode(text, "latin1")``: how protocol 2 writes bytes; no other codec is looked up."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ForbiddenGlobal("_codecs", "encode", f"called with the codec {encoding!r}")
    return codecs.latin_1_encode(text)[0]


_ARROW_STRINGS = ("string", "utf8", "large_string", "large_utf8")


def _arrow_alias(alias: Any) -> Any:
    """``pyarrow.lib.type_for_alias``, for string types only."""
    import pyarrow as pa

    if alias not in _ARROW_STRINGS:
        raise ForbiddenGlobal("pyarrow.lib", "type_for_alias", f"called for the type {alias!r}")
    return pa.large_string() if alias.startswith("large") else pa.string()


def _arrow_buffer(data: Any) -> Any:
    """``pyarrow.lib.py_buffer`` of bytes."""
    import pyarrow as pa

    if not isinstance(data, bytes | bytearray):
        raise NotATable("an Arrow buffer is not bytes")
    return pa.py_buffer(bytes(data))


def _arrow_strings(data: Any) -> Any:
    """``pyarrow.lib._restore_array`` for a string array, fully validated before anything reads it (its offsets
    come from the file: unchecked, they would let Arrow read memory outside the buffers)."""
    import pyarrow as pa

    if not (isinstance(data, tuple) and len(data) == 7):
        raise NotATable("an Arrow array's state is not one pyarrow wrote")
    dtype, length, null_count, offset, buffers, children, dictionary = data
    if dtype not in (pa.string(), pa.large_string()) or children != [] or dictionary is not None:
        raise NotATable("an Arrow array is not an array of strings")
    if not (isinstance(length, int) and isinstance(null_count, int) and isinstance(offset, int)):
        raise NotATable("an Arrow array's length is not an integer")
    if (
        not isinstance(buffers, list)
        or len(buffers) != 3
        or not all(buffer is None or isinstance(buffer, pa.Buffer) for buffer in buffers)
    ):
        raise NotATable("an Arrow string array does not have its three buffers")
    try:
        array = pa.Array.from_buffers(dtype, length, buffers, null_count, offset)
        array.validate(full=True)
    except (pa.ArrowException, ValueError, TypeError) as error:
        raise NotATable(f"an Arrow string array is damaged ({error})") from None
    return array


def _is_arrow_strings(value: Any) -> bool:
    import pyarrow as pa

    return isinstance(value, pa.Array) and value.type in (pa.string(), pa.large_string())
