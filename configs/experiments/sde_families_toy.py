"""VP, sub-VP, VE, rectified flow and EDM side by side: same data, network and training budget.

    python -m score_sde.experiments --spec=configs/experiments/sde_families_toy.py \
        --workdir=runs/sde_families_toy

Each family is trained the way its authors do, with the toy MLP of ``default_toy`` and the same
steps, batch and learning rate: VP / sub-VP (noise prediction, the paper's DSM loss), VE (score
network, DSM), rectified flow (velocity network, flow matching, t in [0, 0.99]) and EDM (sigma
process from 0.002 to 10, EDM's preconditioning, log-normal noise levels and loss weighting).
Data: the 8-mode Gaussian mixture, whose exact density gives the samples' NLL. Every family is
sampled by every sampler, so each one's best sampler at each NFE can be read off: the reverse
SDE (PC Euler–Maruyama with 200 steps: rectified flow's g(t)^2 = 2t / (1 - t) makes its first
steps unstable below about 2 T / (1 - T) = 198 steps), the adaptive probability-flow ODE,
DPM-Solver++(2M) and EDM's Heun. Add ``'spiral'`` to the data axis for a second data set.
The short run (1000 steps) uses an EMA rate of 0.99 so that every family's EMA has forgotten
the initialisation.
"""
import ml_collections

from configs import default_toy

FAMILIES = [
    {'name': 'vp', 'training.sde': 'vpsde'},
    {'name': 'subvp', 'training.sde': 'subvpsde'},
    {'name': 've', 'training.sde': 'vesde'},
    {'name': 'rf', 'training.sde': 'rectified_flow', 'training.objective': 'velocity',
     'model.parameterization': 'velocity'},
    {'name': 'edm', 'training.sde': 'edm', 'model.precond': 'edm', 'model.sigma_min': 0.002,
     'model.sigma_max': 10.0, 'model.sigma_data': 0.5},
]


def get_config():
  base = default_toy.get_config()
  base.training.n_iters = 1000
  base.training.batch_size = 256
  base.training.log_freq = 250
  base.training.eval_freq = 500
  base.training.snapshot_freq = 1000
  base.training.snapshot_freq_for_preemption = 500
  base.training.snapshot_sampling = False
  base.optim.lr = 5e-3
  # The EMA must forget the zero-output initialisation within the short run: 0.999^1000 = 0.37
  # of the average would still be the initial parameters; 0.99^1000 ~ 4e-5.
  base.model.ema_rate = 0.99

  spec = ml_collections.ConfigDict()
  spec.base = base
  spec.train_axes = {'data': {'dataset': ['gaussian_mixture']}, 'family': FAMILIES}
  spec.samplers = {
      'pc_em': {'method': 'pc', 'predictor': 'euler_maruyama', 'corrector': 'none',
                'nfe': [200]},
      'ode': {'method': 'ode', 'rtol': 1e-3, 'atol': 1e-3},
      'dpm_solver2': {'method': 'dpm_solver', 'order': 2},
      'heun': {'method': 'heun'},
  }
  spec.nfe = [10, 20, 50]
  spec.seeds = [0, 1]
  spec.metrics = ['nll', 'sliced_wasserstein']
  spec.metric_options = {'sw_projections': 256, 'sw_p': 2}
  spec.num_samples = 2000
  spec.plot_columns = 'family'
  return spec
