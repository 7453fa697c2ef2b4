"""VP, sub-VP, VE, rectified flow and EDM on the digits, each sampled by PC, the probability-flow
ODE, DPM-Solver++ and Heun across NFE: the paper's comparison at a size a 2-core CPU runs.

    python -m score_sde.experiments --spec=configs/experiments/sde_variants_digits.py \
        --workdir=runs/sde_variants_digits

Variants: the digits config of each family as it is (``configs/{vp,subvp,ve,rf,edm}/digits_*``,
the digits' native 8x8) but trained for 2,000 steps of batch 64 (the configs: 4,000 of 128) to
fit the spec in half an hour on 2 CPU cores; trained once each. Every cell draws 256 samples
with 3 sampling seeds; metrics:
``digits_fd`` (Fréchet distance of the offline digits classifier's features to the train
split's) and ``digits_confidence`` (its mean max-softmax), and ``bpd``, the probability-flow
likelihood of the first 128 test digits (uniform dequantisation; once per model).
Samplers: PC Euler-Maruyama (100 steps), the adaptive probability-flow ODE (Dopri5, rtol 1e-2,
atol 1e-5: its NFE is measured), DPM-Solver++(2M) and EDM's Heun at 10-50 NFE.
"""
import ml_collections

FAMILIES = [
    {'name': 'vp', 'config': 'configs/vp/digits_ddpmpp_continuous.py'},
    {'name': 'subvp', 'config': 'configs/subvp/digits_ddpmpp_continuous.py'},
    {'name': 've', 'config': 'configs/ve/digits_ncsnpp_continuous.py'},
    {'name': 'rf', 'config': 'configs/rf/digits_ddpmpp_continuous.py'},
    {'name': 'edm', 'config': 'configs/edm/digits_ddpmpp_continuous.py'},
]


def get_config():
  spec = ml_collections.ConfigDict()
  spec.train_axes = {'family': FAMILIES}
  # Set on every variant after its config file (nested as in the config).
  spec.overrides = {'training': {'n_iters': 2000, 'batch_size': 64},
                    'eval': {'bpd_num_examples': 128}}
  spec.samplers = {
      'pc_em': {'method': 'pc', 'predictor': 'euler_maruyama', 'corrector': 'none',
                'nfe': (100,)},
      'ode': {'method': 'ode', 'rtol': 1e-2, 'atol': 1e-5},
      'dpm_solver2': {'method': 'dpm_solver', 'order': 2},
      'heun': {'method': 'heun'},
  }
  spec.nfe = (10, 20, 50)
  spec.seeds = (0, 1, 2)
  spec.metrics = ('digits_fd', 'digits_confidence', 'bpd')
  spec.num_samples = 256
  spec.batch_size = 256               # samples per round over all devices of all hosts
  spec.plot_columns = 'family'
  return spec
