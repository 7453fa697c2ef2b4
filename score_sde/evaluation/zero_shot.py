"""How well a contrastive pair's embeddings agree (``models/contrastive.py``), on held-out data.

    zero-shot accuracy   mean_i [argmax_k v_i . p_k = y_i]     v_i (N, D) image embeddings,
                                                               p_k (K, D) one prompt per class
    image -> caption     mean_i [argmax_c v_i . u_c = c_i]     u_c over the split's C distinct
                                                               captions, c_i image i's caption
    caption -> image     mean_c [c_{argmax_i u_c . v_i} = c]   the most similar image carries c

Chance levels: 1 / K, 1 / C, and for caption -> image the share of images with that caption.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def zero_shot_accuracy(image_embeddings: np.ndarray, labels: np.ndarray,
                       prompt_embeddings: np.ndarray) -> float:
  """Share of images whose most similar prompt (row k of ``prompt_embeddings``) is class y."""
  predicted = np.argmax(np.asarray(image_embeddings) @ np.asarray(prompt_embeddings).T, axis=1)
  return float(np.mean(predicted == np.asarray(labels)))


def retrieval_accuracy(image_embeddings: np.ndarray, caption_embeddings: np.ndarray,
                       captions: Sequence[str]) -> dict[str, float]:
  """{'image_to_caption', 'caption_to_image', 'distinct_captions'} for N images, the (N, D)
  embeddings of their captions and the captions themselves (repeated captions embed alike, so
  retrieval is among the distinct ones)."""
  distinct, first, ids = np.unique(np.asarray(captions), return_index=True, return_inverse=True)
  u = np.asarray(caption_embeddings)[first]                    # (C, D)
  similarity = np.asarray(image_embeddings) @ u.T              # (N, C)
  image_to_caption = float(np.mean(np.argmax(similarity, axis=1) == ids))
  caption_to_image = float(np.mean(ids[np.argmax(similarity, axis=0)] == np.arange(len(u))))
  return {'image_to_caption': image_to_caption, 'caption_to_image': caption_to_image,
          'distinct_captions': float(len(distinct))}
