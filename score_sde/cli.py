"""What every entry point does with errors: ``cli.run(main)`` in place of ``absl.app.run(main)``.

    from score_sde import cli

    def main(argv):
      ...

    if __name__ == '__main__':
      cli.run(main)

``train.py``, ``sample.py`` and ``python -m score_sde.experiments`` use it. It

- prints a ``ScoreSDEError`` (``score_sde.errors``: a bad config value, a missing file, an
  unreadable or mismatched checkpoint, a non-finite loss) as one short ``Error: ...`` message on
  stderr and exits with status 2;
- does the same for a problem with the command line or the config file (a missing or broken
  config file, a misspelt ``--config.`` key, a value of the wrong type, an unknown flag);
- does the same for a file the program cannot write: a full disk, a read-only file system, a
  missing permission (an ``OSError`` with that errno);
- exits with status 2 without a traceback; ``--traceback`` shows the full stack instead;
- lets every other exception, a bug, propagate with its traceback (status 1), unless another
  process of a multi-host run was lost (``parallel``'s heartbeat reports that, status 75);
- logs absl / orbax at WARNING unless ``--verbosity`` is given (orbax logs every save at INFO);
- turns on the persistent compilation cache (``score_sde.compilation_cache``);
- takes a run's stored config as ``--config`` when only ``--workdir`` is given, and reads
  ``--config=<run>/config.json`` (``score_sde.stored_config``).

After a reported error nothing else is printed: the reports of orbax's abandoned background
reads of a corrupt checkpoint are dropped where the reads happen (``checkpointing``).
"""
from __future__ import annotations

import errno
import re
import sys
from typing import Callable, NoReturn, Sequence

from absl import app, flags, logging

from score_sde import compilation_cache, errors, parallel, stored_config

EXIT_USER_ERROR = 2
_CANNOT_WRITE = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)

flags.DEFINE_bool('traceback', False, 'On an error, show the full Python traceback instead of '
                  'the one-line message.')
FLAGS = flags.FLAGS


def run(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> NoReturn:
  """``absl.app.run(main)`` with the error handling of the module docstring. ``argv`` (default
  ``sys.argv``) is the whole command line, program name first."""
  # ml_collections reads --config.* overrides from sys.argv itself
  argv = sys.argv = stored_config.command_line(sys.argv if argv is None else argv)
  app.run(_guarded(main), argv=argv, flags_parser=parse_flags)


def _guarded(main):
  def guarded_main(argv):
    if not FLAGS['verbosity'].present:
      logging.set_verbosity(logging.WARNING)
    compilation_cache.enable()   # SCORE_SDE_CACHE_DIR=0 turns it off
    try:
      return main(argv)
    except errors.ScoreSDEError as e:
      if FLAGS.traceback:
        raise
      fail(str(e))
    except OSError as e:
      if FLAGS.traceback or e.errno not in _CANNOT_WRITE:
        raise
      fail(f'{e.strerror}: {e.filename}' + (f' -> {e.filename2}' if e.filename2 else '') + '.')
    except Exception as e:
      # Another host died mid-collective: its heartbeat's one line ends this process instead.
      parallel.wait_if_process_lost(e)
      raise
  return guarded_main


def fail(message: str, code: int = EXIT_USER_ERROR) -> NoReturn:
  """Prints ``Error: message`` on stderr and exits; nothing is printed after it."""
  sys.stdout.flush()
  print(f'Error: {message}', file=sys.stderr, flush=True)
  sys.exit(code)


# ``--<config flag>.<path>=None`` overrides, set after parsing: {flag name: [path, ...]}.
_NONE_OVERRIDES: dict[str, list[str]] = {}


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with command-line and config-file problems as one short message."""
  try:
    remaining = FLAGS(_take_none_overrides(argv))
    _raise_deferred_config_errors()
    _set_none_overrides()
  except errors.ScoreSDEError as e:
    if '--traceback' in argv:
      raise
    fail(str(e))
  except Exception as e:  # noqa: BLE001  everything here is about the command line
    if '--traceback' in argv:
      raise
    fail(flag_error_message(e, argv))
  if 'config' in FLAGS and FLAGS['config'].value is None:
    fail(stored_config.missing_config_message(argv))
  return remaining


def _take_none_overrides(argv: list[str]) -> list[str]:
  """``argv`` without its ``--<config flag>.<path>=None``, kept in ``_NONE_OVERRIDES``:
  ml_collections would read 'None' as a string (or fail to read it as a number)."""
  _NONE_OVERRIDES.clear()
  kept = []
  for arg in argv:
    name, _, path = arg[2:].partition('=')[0].partition('.')
    if arg.startswith('--') and path and arg.endswith('=None') and name in FLAGS:
      _NONE_OVERRIDES.setdefault(name, []).append(path)
    else:
      kept.append(arg)
  return kept


def _set_none_overrides() -> None:
  """Sets each ``--<flag>.<path>=None`` where the field may be None: it is None in the config,
  or a typed placeholder (``ml_collections.config_dict.placeholder``: the schema's "no value");
  any other field raises ``ConfigError`` in one line."""
  for name, paths in _NONE_OVERRIDES.items():
    for path in paths:
      *parents, key = path.split('.')
      node = FLAGS[name].value
      for part in parents:
        node = node[part]
      if key not in node:
        node[key]   # the KeyError (with ml_collections' suggestion) of a misspelt key
      # A placeholder stays a FieldReference in the ConfigDict's fields, whatever its value.
      optional = node[key] is None or type(node._fields[key]).__name__ == 'FieldReference'
      if not optional:
        raise errors.ConfigError(
            f'--{name}.{path}=None: {path} cannot be None (it is {node[key]!r} here, and not '
            'optional); give a value.')
      node[key] = None


def none_overrides(name: str = 'config') -> dict[str, None]:
  """{path: None} of the ``--<name>.<path>=None`` of the command line, which
  ``config_flags.get_override_values`` does not list (they are set after parsing)."""
  return dict.fromkeys(_NONE_OVERRIDES.get(name, []))


def _raise_deferred_config_errors() -> None:
  # ml_collections keeps a config file that cannot be read (IOError) as a placeholder that
  # raises on first use, inside the program; it is raised here, with the flags' other errors.
  for name in FLAGS:
    value = FLAGS[name].value
    if type(value).__name__ == '_ErrorConfig':
      try:
        value.keys()
      except OSError as e:
        raise (e.__cause__ or e) from None


def flag_error_message(e: Exception, argv: Sequence[str]) -> str:
  """One line for an exception raised while parsing flags and loading the config file."""
  text = str(e)
  if isinstance(e, (KeyError, AttributeError)):  # repr-quoted: "'\\'n_iter\\'\\nDid you mean..."
    text = text.strip('\'"').replace("\\'", "'").replace('\\n', '\n')
  suggestion = re.search(r'Did you mean "([^"]+)" instead of "([^"]+)"', text)
  if isinstance(e, (KeyError, AttributeError)):
    bad = suggestion.group(2) if suggestion else text.splitlines()[0].strip('\'"')
    arg = next((a for a in argv if a.startswith('--config.') and
                bad in a.split('=')[0].split('.')), None)
    where = f' in {arg}' if arg else ''
    hint = f'; did you mean {suggestion.group(1)!r}?' if suggestion else '.'
    return f'Unknown config key {bad!r}{where}{hint}'
  if isinstance(e, flags.Error):
    lines = [line for line in text.splitlines() if line.strip()]
    head = lines[0]
    if len(lines) > 1:  # a config file that raised: its flag, then the exception's last line
      head = f'{head} {lines[-1].strip()}'
    return f'{head} (--helpshort lists the flags).'
  if isinstance(e, OSError):  # ml_collections: the config file could not be loaded
    return f'Cannot load the config file: {text.splitlines()[-1].strip()}'
  return f'The config file failed to load: {type(e).__name__}: {text.splitlines()[-1].strip()}'
