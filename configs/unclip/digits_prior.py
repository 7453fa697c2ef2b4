"""unCLIP's diffusion prior on the digits: p(image embedding | text embedding) over the 32-d
unit embeddings that ``configs/unclip/digits.py``'s contrastive pair exported to ``runs/unclip``
(``data.dataset='embeddings'``: each scaled by sqrt(32), unit RMS per coordinate), each
conditioned on the text embedding of its caption (``data.context``, (1, 32)), 10% dropped to the
zero null context. The network is the residual MLP with the text embedding added to its time
embedding, EDM-preconditioned (an x0 predictor, as DALL-E 2's prior; sigma_data 1 the data's
RMS); VP, DPM-Solver++(2M) 25 steps:

  train.py --config=configs/unclip/digits_prior.py --workdir=runs/unclip_prior

``contrastive.workdir`` encodes prompts for it: ``score_sde.load('runs/unclip_prior')
.sample(n, prompts=['a seven'])`` gives embeddings (``score_sde.unclip`` decodes them).
"""
import math

from configs import default_toy
from configs.unclip import digits as unclip_digits

EMBED_DIM = 32


def get_config():
  config = default_toy.get_config()
  workdir = unclip_digits.CONTRASTIVE_WORKDIR
  config.contrastive.embed_dim = EMBED_DIM
  config.contrastive.workdir = workdir
  data = config.data
  data.dataset, data.dim, data.centered = 'embeddings', EMBED_DIM, False
  data.path = f'{workdir}/contrastive/image_embeddings.npz'
  data.context = f'{workdir}/contrastive/text_embeddings.npz'
  model = config.model
  model.nf, model.num_layers = 256, 4
  model.context_dim, model.context_length = EMBED_DIM, 1
  model.precond, model.sigma_data = 'edm', 1.0
  model.P_mean = -1.2 + math.log(model.sigma_data / 0.5)
  model.input_fourier_scale = None
  training = config.training
  training.sde = 'vpsde'
  training.batch_size, training.n_iters = 256, 4000
  training.snapshot_freq, training.label_dropout = 4000, 0.1
  config.eval.batch_size = 256
  sampling = config.sampling
  sampling.method, sampling.order, sampling.num_steps = 'dpm_solver', 2, 25
  sampling.batch_size = 512
  sampling.guidance_scale = 0.0
  config.optim.lr, config.optim.decay = 2e-3, 'cosine'
  return config
