"""VP vs sub-VP vs VE on 2-D toys, with the paper's samplers and the fast solvers, across NFE.

    python -m score_sde.experiments --spec=configs/experiments/sde_variants_toy.py \
        --workdir=runs/sde_variants_toy

Models: the toy MLP of ``default_toy`` on the Gaussian mixture (exact data density: NLL of the
samples) and the spiral, one per SDE, trained briefly (1500 steps of batch 512).
Samplers: PC Euler–Maruyama, PC reverse diffusion + Langevin (snr 0.16), the probability-flow ODE
(adaptive Dopri5 at three tolerances: its NFE is measured), DPM-Solver++(2M) and EDM's Heun.
"""
import ml_collections

from configs import default_toy


def get_config():
  base = default_toy.get_config()
  base.training.n_iters = 1500
  base.training.batch_size = 512
  base.training.log_freq = 500
  base.training.eval_freq = 10**9     # no eval loss during training: the cells measure the samples
  base.training.snapshot_freq = 1500
  base.training.snapshot_freq_for_preemption = 500
  base.training.snapshot_sampling = False
  base.optim.lr = 5e-3
  # EMA weight of the initial parameters after n steps is ema_rate^n: 0.999^1500 = 0.22 would
  # leave a fifth of the untrained network in the EMA; 0.99^1500 ~ 3e-7.
  base.model.ema_rate = 0.99

  spec = ml_collections.ConfigDict()
  spec.base = base
  # Any config key, nested as in the config; each tuple is an axis (tuples, not lists, can be
  # overridden on the command line: --spec.seeds='(0, 1)'). The SDE axis takes any name
  # sde_lib.get_sde accepts.
  spec.train_axes = {'data': {'dataset': ('gaussian_mixture', 'spiral')},
                     'training': {'sde': ('vpsde', 'subvpsde', 'vesde')}}
  spec.samplers = {
      'pc_em': {'method': 'pc', 'predictor': 'euler_maruyama', 'corrector': 'none'},
      # The discrete chain of reverse diffusion needs > beta_max = 20 steps (2 NFE each).
      'pc_rd_langevin': {'method': 'pc', 'predictor': 'reverse_diffusion',
                         'corrector': 'langevin', 'snr': 0.16, 'nfe': (50, 200)},
      'ode': {'method': 'ode', 'rtol': (1e-2, 1e-3, 1e-5), 'atol': 1e-5},
      'dpm_solver2': {'method': 'dpm_solver', 'order': 2},
      'heun': {'method': 'heun'},
  }
  spec.nfe = (10, 20, 100)
  spec.seeds = (0, 1, 2)
  spec.seed_scope = 'sampling'      # 'training': every seed trains its own model
  spec.metrics = ('nll', 'sliced_wasserstein', 'mmd')
  spec.metric_options = {'sw_projections': 256, 'sw_p': 2, 'mmd_bandwidth': 0.1}
  spec.num_samples = 2000
  spec.plot_columns = 'training.sde'
  return spec
