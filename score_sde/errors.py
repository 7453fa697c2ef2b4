"""The project's own errors: problems with the user's input, config, data or files.

Everything raised as a ``ScoreSDEError`` is a message for a person: the entry points
(``train.py``, ``sample.py``, ``python -m score_sde.experiments``) print it as one short line on
stderr and exit non-zero, without a traceback (``--traceback`` shows it). Any other exception is
a bug and keeps its traceback. A message names the offending value and, where there is a set of
valid values, lists them.

The subclasses also derive from the built-in type a caller would naturally catch
(``ValueError`` for bad values, ``FileNotFoundError`` for missing files), so library users can
catch either.
"""
from __future__ import annotations


class ScoreSDEError(Exception):
  """Base class: a user-facing problem, reported as one short message."""


class ConfigError(ScoreSDEError, ValueError):
  """A config value, name or combination that is invalid (unknown name, bad range, mismatch)."""


class DataError(ScoreSDEError, ValueError):
  """Input data of the wrong shape, dtype or range, or a dataset that cannot be read."""


class MissingFileError(ScoreSDEError, FileNotFoundError):
  """A file the user must provide (weights, checkpoint, image) is not where they said."""


class MissingDependencyError(ScoreSDEError, ImportError):
  """An optional package (TensorFlow for preparing TFDS data, torch for converting weights) that
  this path needs is not installed; the message names the extra that provides it."""
