"""unCLIP on the digits (``configs/unclip/``), measured offline: the contrastive pair, image
variations through the decoder, and text -> prior -> decoder.

Usage:  .venv/bin/python benchmarks/unclip_digits.py --contrastive=runs/unclip \\
            --decoder=runs/unclip_decoder --prior=runs/unclip_prior [--sources=64] \\
            [--per_image=4] [--num_samples=200] [--settings=0:0,1:1,2:2] [--picture_dir=docs]

(c) The pair, on the held-out split: zero-shot digit accuracy (prompts 'a zero' .. 'a nine',
    and CLIP's ensemble of each digit's six caption forms), image -> caption and caption ->
    image retrieval among the split's distinct captions (``evaluation/zero_shot.py``).
(a) Variations: ``--sources`` held-out digits (a fixed random choice, seed 0), ``--per_image``
    decodings of each one's image embedding with new noise, at decoder guidance w = 0 and 1:
    the share of variations the offline digits classifier reads as the source's label (next to
    its accuracy on the sources themselves) and the FD of the variations to the test split.
(b) Text -> image: prompts 'a zero' .. 'a nine' cycled over ``--num_samples``; for each (prior
    w, decoder w) the share of samples the classifier reads as the prompted digit, the FD to
    the test split (floor: the test split's FD to the train split), and the prior's share in
    embedding space (its samples zero-shot classified with the pair's prompt embeddings); and,
    as DALL-E 2's ablation, the prompt's text embedding decoded as if it were an image
    embedding (no prior).
Samplers: the runs' own (DPM-Solver++(2M), 25 steps).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import score_sde
from score_sde import contrastive_training, plotting, unclip
from score_sde.checkpointing import contrastive as ckpt_contrastive
from score_sde.datasets import captions, digits
from score_sde.evaluation import digits_classifier, zero_shot


def classify(clf, images) -> np.ndarray:
  """Images (n, s, s, 1) in [0, 1] -> the offline classifier's digits (n,)."""
  pixels = np.clip(np.round(np.asarray(images) * 255.0), 0, 255).astype(np.uint8)
  return clf.probabilities(digits_classifier.to_classifier_input(pixels)).argmax(1)


def fd(clf, images, reference) -> float:
  pixels = np.clip(np.round(np.asarray(images) * 255.0), 0, 255).astype(np.uint8)
  return digits_classifier.quality(clf, digits_classifier.to_classifier_input(pixels),
                                   reference)['frechet']


def contrastive_table(decoder, pair) -> None:
  m = contrastive_training.evaluate(decoder.config, pair)
  print('\n(c) contrastive pair, held-out split (270 digits)\n')
  print('| zero-shot (a <digit>) | zero-shot (6-caption ensemble) | image -> caption | '
        'caption -> image | distinct captions |')
  print('|---|---|---|---|---|')
  print(f"| {m['zero_shot_accuracy']:.3f} | {m['zero_shot_ensemble_accuracy']:.3f} | "
        f"{m['image_to_caption']:.3f} | {m['caption_to_image']:.3f} | "
        f"{m['distinct_captions']:.0f} |")


def variations_table(decoder, pair, clf, test, args):
  images, labels = digits.load_split('test', decoder.config.data.image_size)
  chosen = np.sort(np.random.default_rng(0).choice(len(labels), args.sources, replace=False))
  sources, wanted = images[chosen].astype(np.float32) / 255.0, labels[chosen]
  k = args.per_image
  print(f'\n(a) variations: {args.sources} held-out sources x {k}; classifier accuracy on the '
        f'sources themselves {np.mean(classify(clf, sources) == wanted):.3f}\n')
  print('| decoder w | same digit as the source | FD | s |')
  print('|---|---|---|---|')
  found = {}
  for w in (0.0, 1.0):
    t0 = time.time()
    out = unclip.variations(decoder, pair, sources, k, guidance_scale=w).images
    share = np.mean(classify(clf, out) == np.repeat(wanted, k))
    print(f'| {w:g} | {share:.3f} | {fd(clf, out, test):.2f} | {time.time() - t0:.0f} |',
          flush=True)
    found[w] = out
  return sources, found


def text_table(prior, decoder, pair, clf, test, args):
  prompts = [f'a {w}' for w in captions.DIGIT_WORDS]
  prompt_embeddings = pair.encode_text(prompts)
  n = args.num_samples
  wanted = np.arange(n) % 10
  print(f'\n(b) text -> prior -> decoder: prompts a zero .. a nine, {n} samples per row\n')
  print('| prior w | decoder w | digit share | FD | prior share (embeddings) | s |')
  print('|---|---|---|---|---|---|')
  rows = []
  for setting in args.settings.split(','):
    wp, wd = (float(v) for v in setting.split(':'))
    t0 = time.time()
    e = unclip.prior_embeddings(prior, prompts, n, guidance_scale=wp)
    in_embedding = zero_shot.zero_shot_accuracy(e, wanted, prompt_embeddings)
    out = decoder.sample(n, contexts=unclip.check_embeddings(e, decoder, 'The prior'), seed=1,
                         show_progress=False, guidance_scale=wd).images
    share = np.mean(classify(clf, out) == wanted)
    print(f'| {wp:g} | {wd:g} | {share:.3f} | {fd(clf, out, test):.2f} | {in_embedding:.3f} | '
          f'{time.time() - t0:.0f} |', flush=True)
    rows.append((wp, wd, out))
  # DALL-E 2's ablation: the caption's text embedding given to the decoder as if it were an
  # image embedding (no prior), at the last decoder scale.
  t0 = time.time()
  e = prompt_embeddings[wanted]
  out = decoder.sample(n, contexts=unclip.check_embeddings(e, decoder, 'The pair'), seed=1,
                       show_progress=False, guidance_scale=wd).images
  print(f'| text embedding, no prior | {wd:g} | {np.mean(classify(clf, out) == wanted):.3f} | '
        f'{fd(clf, out, test):.2f} | - | {time.time() - t0:.0f} |', flush=True)
  return rows


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--contrastive', default='runs/unclip')
  parser.add_argument('--decoder', default='runs/unclip_decoder')
  parser.add_argument('--prior', default='runs/unclip_prior')
  parser.add_argument('--sources', type=int, default=64)
  parser.add_argument('--per_image', type=int, default=4)
  parser.add_argument('--num_samples', type=int, default=200)
  parser.add_argument('--settings', default='0:0,1:1,2:2')
  parser.add_argument('--picture_dir', default=None)
  args = parser.parse_args()
  decoder, prior = score_sde.load(args.decoder), score_sde.load(args.prior)
  pair = ckpt_contrastive.load_pair(args.contrastive)
  clf = digits_classifier.load_or_train()
  test = digits_classifier.to_classifier_input(digits.load_split('test')[0])
  train = digits_classifier.to_classifier_input(digits.load_split('train')[0])
  print(f'decoder {args.decoder} (step {decoder.step}), prior {args.prior} (step {prior.step}); '
        f'FD floor (test vs train) {digits_classifier.quality(clf, test, train)["frechet"]:.2f}')
  contrastive_table(decoder, pair)
  sources, found = variations_table(decoder, pair, clf, test, args)
  rows = text_table(prior, decoder, pair, clf, test, args)
  if args.picture_dir:
    path = plotting.variation_rows(sources, found[max(found)],
                                   f'{args.picture_dir}/unclip_variations.png', max_rows=10)
    print(f'Wrote {path} (decoder w = {max(found):g})')
    wp, wd, out = rows[-1]
    order = np.argsort(np.arange(len(out)) % 10, kind='stable')
    path = plotting.class_grid(out[order], (np.arange(len(out)) % 10)[order],
                               f'{args.picture_dir}/unclip_prompts.png')
    print(f'Wrote {path} (prior w = {wp:g}, decoder w = {wd:g}; one row per prompt)')


if __name__ == '__main__':
  main()
