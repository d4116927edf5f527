"""Tansuo's exceptions, in one place. Catch :class:`TansuoError` for all of them.

Every message says what was wrong, where (field, row, file), and what was expected.
"""

from __future__ import annotations

__all__ = [
    "TansuoError",
    "ConfigError",
    "DataError",
    "UnreadableSourceError",
    "NothingImportedError",
    "StoreError",
    "UnknownDatasetError",
    "MissingDependencyError",
]


class TansuoError(Exception):
    """Base class of every error Tansuo raises on purpose."""


class ConfigError(TansuoError):
    """A setting has a value Tansuo cannot use."""


class DataError(TansuoError):
    """Input data does not match what was expected."""


class UnreadableSourceError(DataError):
    """A file to import cannot be opened or parsed at all (missing, wrong format, corrupt)."""


class NothingImportedError(DataError):
    """An import finished without a single row accepted or already present."""


class StoreError(TansuoError):
    """The event store cannot be opened or used."""


class UnknownDatasetError(TansuoError):
    """A bundled dataset name that does not exist."""


class MissingDependencyError(TansuoError):
    """An optional package needed for this operation is not installed."""
