"""Any folder of PNG / JPEG images (``data.dataset = 'folder'``, ``data.path = DIR``).

Files are found recursively (``.png``, ``.jpg``, ``.jpeg``, any case) and sorted by path, so the
dataset and its order are a pure function of the folder's contents. Each image is resized so its
shorter side is ``data.image_size`` and centre-cropped to a square. If every image lies inside a
first-level sub-folder, the sub-folders are classes: label = index of the sub-folder's name in
sorted order (``DIR/cat/1.png`` -> the index of 'cat'); an image directly in DIR means no labels.

Corrupt files are a clear error, not skipped. Every file's header is read and checked
(``PIL.Image.verify``, which for PNG also checks each chunk's CRC) when the dataset is built,
and all unreadable files are listed in one ``ValueError`` before training starts. Skipping them
silently would make the dataset (its size, its order, hence a resumed run's data) depend on
which files happen to fail, and hide data loss; deleting or repairing the listed files is a
one-off fix. A file whose damage only shows when its pixels are decoded (e.g. a truncated JPEG)
raises a ``ValueError`` naming the file at the step that reads it.

There is no separate test split: 'train' and 'test' read the same images ('test' unflipped).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
from PIL import Image

from score_sde.datasets import image_ops
from score_sde.errors import DataError, MissingFileError

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')
# PIL mode -> the mode images are converted to; its band count is the channel count.
_TARGET_MODE = {'1': 'L', 'L': 'L', 'I': 'L', 'I;16': 'L', 'F': 'L', 'LA': 'LA', 'RGBA': 'RGBA',
                'PA': 'RGBA'}   # anything else (RGB, P, CMYK, YCbCr...) -> RGB
_MAX_LISTED = 10


def _target_mode(mode: str) -> str:
  return _TARGET_MODE.get(mode, 'RGB')


def find_images(root: str) -> list[str]:
  """Relative paths of all images under ``root``, sorted."""
  found = []
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    dirnames.sort()
    found += [os.path.relpath(os.path.join(dirpath, f), root) for f in filenames
              if f.lower().endswith(IMAGE_EXTENSIONS)]
  return sorted(found)


def _probe(path: str) -> str:
  """The PIL mode of the image at ``path``; raises on an unreadable or corrupt file."""
  with Image.open(path) as im:
    mode = im.mode
    im.verify()
  return mode


@dataclasses.dataclass(frozen=True)
class FolderSource:
  """Random access to (path, label) records; decoding happens in ``decode`` (worker threads)."""
  root: str
  files: tuple[str, ...]
  labels: tuple[int, ...] | None
  classes: tuple[str, ...] | None
  mode: str

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, index: int) -> dict[str, Any]:
    record = {'path': os.path.join(self.root, self.files[index])}
    if self.labels is not None:
      record['label'] = self.labels[index]
    return record

  @property
  def num_channels(self) -> int:
    return len(self.mode)


def scan_folder(root: str) -> FolderSource:
  """Finds and checks every image under ``root`` (see the module docstring for the rules)."""
  if not root or not os.path.isdir(root):
    raise MissingFileError(f'data.path = {root!r} is not a directory; set data.path to a folder '
                           f'of {"/".join(IMAGE_EXTENSIONS)} images.')
  files = find_images(root)
  if not files:
    raise DataError(f'No images ({", ".join(IMAGE_EXTENSIONS)}) found under {root!r}.')
  modes, bad = {}, []
  for f in files:
    try:
      modes[f] = _target_mode(_probe(os.path.join(root, f)))
    except Exception as e:   # PIL raises OSError, SyntaxError, ValueError... for bad files
      bad.append(f'{f} ({type(e).__name__}: {e})')
  if bad:
    listed = '\n  '.join(bad[:_MAX_LISTED])
    more = f'\n  ... and {len(bad) - _MAX_LISTED} more' if len(bad) > _MAX_LISTED else ''
    raise DataError(f'{len(bad)} of {len(files)} image files under {root!r} cannot be read; '
                    f'delete or repair them (corrupt files are not skipped, so that the dataset '
                    f'is exactly what is on disk):\n  {listed}{more}')
  by_channels: dict[int, list[str]] = {}
  for f, m in modes.items():
    by_channels.setdefault(len(m), []).append(f)
  if len(by_channels) > 1:
    examples = '; '.join(f'{c} channel(s): {len(fs)} files, e.g. {fs[0]}'
                         for c, fs in sorted(by_channels.items()))
    raise DataError(f'Images under {root!r} have mixed channel counts ({examples}). Convert them '
                    f'to one mode (e.g. all RGB) first.')
  labels = classes = None
  if all(os.sep in f for f in files):
    classes = tuple(sorted({f.split(os.sep)[0] for f in files}))
    index = {c: i for i, c in enumerate(classes)}
    labels = tuple(index[f.split(os.sep)[0]] for f in files)
  return FolderSource(root, tuple(files), labels, classes, next(iter(modes.values())))


def decode(record: dict[str, Any], mode: str, image_size: int) -> dict[str, Any]:
  """{'path'[, 'label']} -> {'image': (image_size, image_size, C) uint8[, 'label': int32]}."""
  path = record['path']
  try:
    with Image.open(path) as im:
      image = np.asarray(im.convert(mode))
  except Exception as e:
    raise DataError(f'Cannot decode image {path!r} ({type(e).__name__}: {e}); delete or repair '
                    f'it.') from e
  if image.ndim == 2:
    image = image[..., None]
  out = {'image': image_ops.resize_then_crop(image, image_size)}
  if 'label' in record:
    out['label'] = np.int32(record['label'])
  return out
