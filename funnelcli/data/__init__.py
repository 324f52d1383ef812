"""Tables in and out: reading numeric tables, splitting off validation rows, writing files atomically."""

from funnelcli.data.columns import constant_columns, integer_columns
from funnelcli.data.tables import (
    READ_EXTENSIONS,
    WRITE_EXTENSIONS,
    atomic_path,
    check_output_path,
    read_columns,
    read_table,
    split_validation,
    write_table,
)

__all__ = [
    "constant_columns",
    "integer_columns",
    "READ_EXTENSIONS",
    "WRITE_EXTENSIONS",
    "atomic_path",
    "check_output_path",
    "read_columns",
    "read_table",
    "split_validation",
    "write_table",
]
