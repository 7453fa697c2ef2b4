"""A run's stored config as a config file: ``--workdir`` alone, or ``--config=RUN/config.json``.

Every run records its config in ``<workdir>/config.json`` (``checkpointing.write_config_json``)
and in each checkpoint. This module turns that JSON back into a locked ``ConfigDict`` that
accepts ``--config.section.key=value`` overrides like a config file does:

    train.py --mode=eval --workdir=runs/digits                       # the run's own config
    sample.py --workdir=runs/digits --config.sampling.method=heun    # overridden
    sample.py --workdir=runs/digits --config=runs/digits/config.json # the same, spelt out

``command_line(argv)`` rewrites an entry point's command line before absl parses it: a
``--config`` ending in ``.json`` is loaded through this file (ml_collections' ``path:argument``
form calls ``get_config(argument)``), and without ``--config`` the ``--workdir``'s stored config
becomes the default. A ``--config=file.py`` given with ``--workdir`` is used as before and checked
against the run's stored config (``checkpointing``: a different run's identity stops the command).

JSON has no tuples and no typed ``None``: lists become tuples (configs use tuples), and a ``None``
becomes a placeholder of any type, so an override of it is parsed as a Python literal.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

import ml_collections
from ml_collections.config_dict import placeholder

from score_sde.errors import ConfigError, MissingFileError

CONFIG_JSON = 'config.json'


def config_from_dict(tree: dict) -> ml_collections.ConfigDict:
  """A ConfigDict from ``config_checks.config_to_dict``'s JSON data (see the module docstring)."""
  config = ml_collections.ConfigDict()
  for key, value in tree.items():
    if isinstance(value, dict):
      config[key] = config_from_dict(value)
    elif value is None:
      config[key] = placeholder(object)
    elif isinstance(value, list):
      config[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    else:
      config[key] = value
  return config


def _schema():
  """``configs/base.py``'s schema when the repository's configs are at hand (a checkout, an
  editable install), else None."""
  import importlib.util
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs',
                      'base.py')
  if not os.path.exists(path):
    return None
  spec = importlib.util.spec_from_file_location('_score_sde_config_schema', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_base_config()


def _add_missing(config: ml_collections.ConfigDict, schema: ml_collections.ConfigDict) -> None:
  """Keys the schema has gained since the run stored its config get the schema's defaults."""
  for key in schema.keys():
    if key not in config:
      config[key] = schema._fields[key]   # keeps a typed placeholder typed
    elif isinstance(schema[key], ml_collections.ConfigDict) and isinstance(
        config[key], ml_collections.ConfigDict):
      _add_missing(config[key], schema[key])


def load_json(path: str) -> ml_collections.ConfigDict:
  """The config stored at ``path`` (a ``config.json`` or a run's workdir holding one)."""
  if os.path.isdir(path):
    path = os.path.join(path, CONFIG_JSON)
  if not os.path.exists(path):
    raise MissingFileError(f'No stored config at {path}: a run writes {CONFIG_JSON} to its '
                           'workdir when it starts training.')
  try:
    with open(path) as f:
      tree = json.load(f)
  except (OSError, ValueError) as e:
    raise ConfigError(f'Cannot read the stored config {path}: {e}') from None
  if not isinstance(tree, dict):
    raise ConfigError(f'{path} is not a stored config (a JSON object of config sections).')
  return with_schema_defaults(config_from_dict(tree))


def with_schema_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``config`` with the keys added to the schema after it was stored (their defaults)."""
  schema = _schema()
  if schema is not None:
    _add_missing(config, schema)
  return config


def get_config(path: str) -> ml_collections.ConfigDict:
  """ml_collections' entry point: ``--config=<this file>:<path to config.json>``."""
  return load_json(path)


def _flag_value(argv: Sequence[str], name: str) -> tuple[int, str | None]:
  """(index, value) of the last ``--name=value`` / ``--name value`` in argv; (-1, None)."""
  found = (-1, None)
  for i, arg in enumerate(argv):
    if arg == f'--{name}' and i + 1 < len(argv):
      found = (i, argv[i + 1])
    elif arg.startswith(f'--{name}='):
      found = (i, arg.split('=', 1)[1])
  return found


def command_line(argv: Sequence[str]) -> list[str]:
  """``argv`` with the stored config put in for ``--config`` where the module docstring says.

  Unchanged when ``--config`` names a Python config file, or when there is neither ``--config``
  nor a ``--workdir`` with a stored config (the entry point then reports the missing flag)."""
  argv = list(argv)
  index, value = _flag_value(argv, 'config')
  loader = os.path.abspath(__file__)
  if value is not None and value.endswith('.json'):
    spliced = [f'--config={loader}:{os.path.abspath(value)}']
    width = 1 if argv[index].startswith('--config=') else 2
    return argv[:index] + spliced + argv[index + width:]
  if value is None:
    _, workdir = _flag_value(argv, 'workdir')
    if workdir and os.path.exists(os.path.join(workdir, CONFIG_JSON)):
      stored = os.path.abspath(os.path.join(workdir, CONFIG_JSON))
      return argv[:1] + [f'--config={loader}:{stored}'] + argv[1:]
  return argv


def missing_config_message(argv: Sequence[str]) -> str | None:
  """The one-line error for a command without ``--config`` and without a run to take it from;
  None when a config is there."""
  if _flag_value(argv, 'config')[1] is not None:
    return None
  _, workdir = _flag_value(argv, 'workdir')
  if workdir is None:
    return 'Give --config=<config file> (and --workdir), or --workdir of a trained run.'
  return (f'--workdir {workdir} has no stored config ({CONFIG_JSON}, written when a run starts '
          'training): give --config=<config file>.')


def uses_stored_config(argv: Sequence[str]) -> bool:
  """Whether the (rewritten) command line loads a stored config."""
  value = _flag_value(argv, 'config')[1] or ''
  return value.startswith(os.path.abspath(__file__) + ':')

