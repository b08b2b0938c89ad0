"""Errors that reach the user as one line (the CLI prints ``error: <message>`` and exits 2)."""

from __future__ import annotations


class DiffrlError(Exception):
    """Base class: anything the user can fix (bad input, missing file, wrong config)."""


class DatasetError(DiffrlError):
    """A dataset file or name is missing, malformed or inconsistent.

    The message names the file, the key and the problem, e.g.
    ``data.hdf5: key 'actions' is missing``.
    """


class ConfigError(DiffrlError):
    """An unknown or ill-typed configuration key or value."""
