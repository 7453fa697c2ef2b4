"""The autoguidance guide of a digits config (``sampling.autoguidance_workdir``): the family's own
config with a quarter of the channels (nf 8, ~12k parameters against ~180k) trained an eighth as
long on half the batch (500 steps of 64, under a minute on a 2-core CPU). Autoguidance (Karras
et al. 2024) wants a guide with the model's kind of errors, only more of them: same SDE,
preconditioning and data, smaller and shorter-trained. Measured in benchmarks/RESULTS.md ("Autoguidance on the digits").

    train.py --config=configs/digits_guide.py:vp --workdir=runs/demo_digits_vp_guide
    sample.py --workdir=runs/demo_digits_vp --config.sampling.autoguidance_workdir=\
runs/demo_digits_vp_guide --config.sampling.autoguidance_scale=0.3
"""
import importlib

from score_sde.errors import ConfigError

FAMILIES = {
    'vp': 'configs.vp.digits_ddpmpp_continuous',
    'subvp': 'configs.subvp.digits_ddpmpp_continuous',
    've': 'configs.ve.digits_ncsnpp_continuous',
    'rf': 'configs.rf.digits_ddpmpp_continuous',
    'edm': 'configs.edm.digits_ddpmpp_continuous',
}


def get_config(family: str = 'vp'):
  if family not in FAMILIES:
    raise ConfigError(f'configs/digits_guide.py:{family}: unknown family; valid: '
                      f'{", ".join(FAMILIES)}.')
  config = importlib.import_module(FAMILIES[family]).get_config()
  config.model.nf = 8
  training = config.training
  training.batch_size = 64
  training.n_iters = 500
  training.snapshot_freq = 500
  training.snapshot_freq_for_preemption = 500
  training.eval_freq = 500
  return config
