"""The paper's comparison on CIFAR-10 (Song et al. 2021, Tables 2-3): VP and sub-VP with DDPM++
(cont.), VE with NCSN++ (cont.), each sampled by the paper's samplers and the fast solvers.

    python -m score_sde.experiments --spec=configs/experiments/sde_variants_cifar10.py \
        --workdir=runs/sde_variants_cifar10 --spec.metric_options.inception_weights=inception_fid.npz
    python -m score_sde.experiments --spec=configs/experiments/sde_variants_cifar10.py \
        --workdir=runs/sde_variants_cifar10 --dry_run        # the plan and its cost; nothing runs

For an accelerator: every variant is the paper's config file unchanged (1.3M steps of batch 128;
or name a trained ``workdir`` / ``checkpoint`` in its entry to evaluate it instead), every cell
draws 50,000 samples in rounds of 1,000 over all devices of all hosts (resumable round by round)
and scores them with FID and IS against the CIFAR-10 train split's Inception statistics
(computed once and cached next to the data); bits/dim is the probability-flow likelihood on the
test split with uniform dequantisation (the paper's protocol; one pass, rtol = atol = 1e-5).
Samplers: the paper's predictor-corrector samplers at its 1000 noise levels (Euler-Maruyama for
VP / sub-VP; reverse diffusion + Langevin, snr 0.16, for all three as in its Table 1), the
adaptive probability-flow ODE (RK45 tolerances 1e-5), DPM-Solver++(2M) and EDM's Heun at 10-50
NFE. One sampling seed: at 50,000 samples the seed-to-seed spread of FID is ~0.05 and a second
seed would double the cost.
"""
import ml_collections

VARIANTS = [
    {'name': 'vp', 'config': 'configs/vp/cifar10_ddpmpp_continuous.py'},
    {'name': 'subvp', 'config': 'configs/subvp/cifar10_ddpmpp_continuous.py'},
    {'name': 've', 'config': 'configs/ve/cifar10_ncsnpp_continuous.py'},
]


def get_config():
  spec = ml_collections.ConfigDict()
  spec.train_axes = {'family': VARIANTS}
  spec.samplers = {
      'pc_em': {'method': 'pc', 'predictor': 'euler_maruyama', 'corrector': 'none',
                'nfe': (1000,)},
      'pc_rd_langevin': {'method': 'pc', 'predictor': 'reverse_diffusion',
                         'corrector': 'langevin', 'snr': 0.16, 'nfe': (2000,)},
      'ode': {'method': 'ode', 'rtol': 1e-5, 'atol': 1e-5},
      'dpm_solver2': {'method': 'dpm_solver', 'order': 2},
      'heun': {'method': 'heun'},
  }
  spec.nfe = (10, 20, 50)
  spec.seeds = (0,)
  spec.metrics = ('fid', 'is', 'bpd')
  spec.metric_options = {
      'inception_weights': '',        # the converted FID Inception .npz (README, Evaluation)
      'is_splits': 10,
  }
  spec.num_samples = 50000
  spec.batch_size = 1000              # samples per round over all devices of all hosts
  spec.plot_columns = 'family'
  return spec
