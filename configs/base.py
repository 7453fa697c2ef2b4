"""The schema every config shares: each key the library reads, with its default.

Dataset-family defaults (`default_toy.py`, `default_cifar10_configs.py`, ...) start from
`get_base_config()` and set their own values; experiment files change only what differs.
Field names follow the paper's code (yang-song/score_sde). `None` means "no value"; optional
fields are typed placeholders (None until set) so they can be set from the command line.
"""
import ml_collections
from ml_collections.config_dict import placeholder


def get_base_config():
  config = ml_collections.ConfigDict()
  config.seed = 42

  config.training = training = ml_collections.ConfigDict()
  training.sde = 'vpsde'                 # 'vpsde' | 'subvpsde' | 'vesde' | 'rectified_flow' | 'edm'
  training.objective = placeholder(str)  # None / 'score': the DSM loss; 'eps' | 'x0' | 'velocity'
                                         # (flow matching): unweighted regression of that quantity;
                                         # few-step models (score_sde/consistency.py), drawn with
                                         # sampling.method='few_step' and trained down to
                                         # sampling.eps: 'ct' (consistency training, iCT's
                                         # curriculum over n_iters), 'cd' (distillation from
                                         # teacher_workdir), 'meanflow' (needs model.two_times)
  training.teacher_workdir = placeholder(str)   # 'cd': a trained score model's workdir (same
                                         # SDE and data shape); its EMA parameters are the teacher
  training.consistency_levels = 18       # 'cd': points of the Karras grid the teacher steps on
  training.consistency_metric = 'pseudo_huber'  # 'ct' | 'cd': the loss's distance, 'pseudo_huber'
                                         # (iCT's) or 'l2' (consistency.METRICS)
  training.consistency_ratio = placeholder(float)   # 'cd': None: adjacent grid levels; r > 1: any
                                         # level sigma and sigma / r (consistency_losses)
  training.teacher_substeps = 1          # 'cd': Heun steps of the teacher between the two levels
  training.teacher_init = False          # 'cd': start the student from the teacher's EMA
                                         # parameters (Song et al. 2023); needs the same network
  training.meanflow_ratio = 0.25         # 'meanflow': share of (r, t) pairs with r < t (else r = t)
  training.continuous = True             # continuous-time DSM; False: the discrete SMLD / DDPM loss
  training.reduce_mean = False           # mean (True) or sum (False) of the per-example loss over dims
  training.likelihood_weighting = False  # lambda(t) = g(t)^2 (Song et al. 2021b)
  training.batch_size = 128              # global batch, split over all devices of all hosts
  training.n_iters = 1300001
  training.log_freq = 50
  training.eval_freq = 100
  training.snapshot_freq = 50000         # kept forever
  training.snapshot_freq_for_preemption = 10000   # only the latest is kept
  training.snapshot_sampling = True      # draw samples at each snapshot_freq
  training.distributed = False           # multi-host: call jax.distributed.initialize()
  training.n_jitted_steps = 1            # steps per device call (lax.scan); divides the *_freq values
  training.posthoc_ema_sigma_rels = placeholder(tuple)   # post-hoc EMA (EDM2): relative stds
                                         # of the power EMAs tracked, e.g. (0.05, 0.10); None: off
  training.posthoc_ema_snapshot_freq = 5000   # their snapshots (all kept) every this many steps
  training.label_dropout = 0.1           # class-conditional models: share of labels replaced by
                                         # the null class, so one network is also unconditional;
                                         # context models: of contexts replaced by zeros

  config.sampling = sampling = ml_collections.ConfigDict()
  sampling.method = 'pc'                 # 'pc' | 'ode' | 'dpm_solver' | 'heun' | 'ddim' | 'unipc' |
                                         # 'few_step' (models of training.objective 'ct' | 'cd' |
                                         # 'meanflow'; num_steps None: 1)
  sampling.predictor = 'euler_maruyama'  # 'euler_maruyama' | 'reverse_diffusion' | 'ancestral_sampling' | 'none'
  sampling.corrector = 'none'            # 'langevin' | 'ald' | 'none'
  sampling.snr = 0.16
  sampling.n_steps_each = 1
  sampling.noise_removal = True
  sampling.probability_flow = False
  sampling.num_steps = placeholder(int)              # None: sde.N
  sampling.order = 3                     # DPM-Solver++ / UniPC order
  sampling.unipc_variant = 'bh1'         # UniPC's B(h): 'bh1' (h) | 'bh2' (e^h - 1)
  sampling.rtol = 1e-5
  sampling.atol = 1e-5
  sampling.eps = 1e-3                    # smallest time the samplers integrate down to
  sampling.time_schedule = placeholder(str)          # 'uniform' | 'logsnr' | 'edm' | 'optimised'; None: the method's own
                                         # (dpm_solver/ddim 'logsnr', heun 'edm'); pc/ode: uniform only
  sampling.grid_path = placeholder(str)  # time_schedule='optimised': a grid file of sampling.grid_optimisation
  sampling.rho = 7.0
  sampling.S_churn = 0.0
  sampling.S_min = 0.0
  sampling.S_max = float('inf')
  sampling.S_noise = 1.0
  sampling.batch_size = 512              # samples drawn at each snapshot during training
  sampling.ema_sigma_rel = placeholder(float)   # post-hoc EMA of this length (relative std, e.g.
                                         # 0.07) rebuilt from the run's snapshots; None: model.ema_rate's
  sampling.x0_clip = placeholder(str)    # bounded data: None | 'static' (clip the x0 prediction
                                         # to the data range) | 'dynamic' (Imagen's thresholding)
  sampling.dynamic_threshold_percentile = 0.995   # 'dynamic': quantile of |x0| per sample
  # Class guidance (score_sde/sampling/guidance.py). Classifier-free: score = (1 + w) s(x, t, y) - w s(x, t),
  # w = guidance_scale, applied only while the noise level sigma(t) = s(t) / m(t) lies in
  # [guidance_sigma_min, guidance_sigma_max] (Kynkaenniemi et al. 2024); w = 0 is p(x | y).
  sampling.guidance_scale = 0.0
  sampling.guidance_sigma_min = 0.0
  sampling.guidance_sigma_max = float('inf')
  sampling.classifier_scale = 1.0        # classifier guidance: score + scale grad log p_t(y | x)
  # Autoguidance (score_sde/sampling/autoguidance.py): score + w (score - guide's score), the guide
  # a smaller / shorter-trained score model of the same SDE and data (its workdir); w = 0: off;
  # w acts only while sigma(t) lies in [autoguidance_sigma_min, autoguidance_sigma_max].
  sampling.autoguidance_workdir = placeholder(str)
  sampling.autoguidance_scale = 0.0
  sampling.autoguidance_sigma_min = 0.0
  sampling.autoguidance_sigma_max = float('inf')

  config.eval = evaluate = ml_collections.ConfigDict()
  # Checkpoints evaluated, as the paper numbers them: snapshot i is step i * training.snapshot_freq;
  # every stored step in [begin_ckpt, end_ckpt] * snapshot_freq is evaluated (end None: no bound).
  evaluate.begin_ckpt = 1
  evaluate.end_ckpt = placeholder(int)
  evaluate.batch_size = 512
  evaluate.enable_sampling = False
  evaluate.num_samples = 50000
  evaluate.enable_loss = True
  evaluate.enable_bpd = False
  evaluate.bpd_dataset = 'test'          # 'train' | 'test'
  evaluate.num_repeats = 1               # passes over the split (fresh dequantization noise each)
  evaluate.bpd_num_examples = placeholder(int)       # cap per checkpoint; None: whole split x num_repeats
                                         # (endless toy data: 10000 examples)
  evaluate.likelihood_hutchinson_type = 'rademacher'   # 'rademacher' | 'gaussian' | 'none' (exact)
  evaluate.likelihood_rtol = 1e-5
  evaluate.likelihood_atol = 1e-5
  evaluate.likelihood_eps = 1e-5         # the probability-flow ODE starts at t = eps
  evaluate.inception_weights = placeholder(str)      # FID Inception .npz made once by
                                         # `python -m score_sde.evaluation.convert_inception`
  evaluate.stats_path = placeholder(str)             # reference statistics .npz; None: cached
                                         # next to the data (evaluation/reference_stats.py)
  evaluate.loss_num_examples = 10000     # eval-split examples the loss is averaged over
  evaluate.toy_metrics = ('nll', 'sliced_wasserstein', 'mmd')   # 2-D data (evaluation/toy_metrics.py)
  evaluate.mmd_bandwidth = 0.1           # Gaussian kernel bandwidth of the toy MMD (data units)
  evaluate.sw_projections = 256          # directions of the toy sliced Wasserstein distance
  # The loss per noise level against the empirical optimum (evaluation/loss_by_sigma.py): TensorBoard
  # eval/loss_sigma_<bucket> at training.eval_freq, and a report entry + plot in --mode=eval.
  evaluate.loss_by_sigma = False
  evaluate.loss_by_sigma_examples = 256  # (example, noise, sigma) draws per sigma bucket
  evaluate.loss_by_sigma_reference = 2048   # distinct training examples: the optimum's data set

  config.data = data = ml_collections.ConfigDict()
  data.dataset = 'spiral'
  data.path = placeholder(str)                       # for data.dataset = 'folder'
  data.image_size = 32
  data.num_channels = 3
  data.centered = False                  # [-1, 1] if True, else [0, 1]
  data.random_flip = True
  data.uniform_dequantization = False
  data.num_classes = placeholder(int)
  data.data_dir = placeholder(str)                   # TFDS data dir (None: TFDS's default, ~/tensorflow_datasets)
  data.num_workers = 2                   # grain worker threads (sized for a 2-core machine)
  data.prefetch = 2                      # batches prepared ahead of the training step
  # Latent diffusion (score_sde/datasets/latents.py): the model learns the latents of an
  # autoencoder: a workdir trained with --mode=train_autoencoder, a converted .npz or a diffusers
  # folder. latent_size / latent_channels: the latent shape the model is built for (checked
  # against the autoencoder). The split is encoded once into latent_cache (None: beside it).
  data.latents = placeholder(str)
  data.latent_size = placeholder(int)
  data.latent_channels = placeholder(int)
  data.latent_cache = placeholder(str)
  # Per-example contexts for a context-conditional model (score_sde/datasets/contexts.py):
  # None | 'captions' (the digits' made captions, a folder's captions.txt, as word contexts) |
  # an .npz of precomputed (N, L, D) embeddings per split.
  data.context = placeholder(str)

  config.model = model = ml_collections.ConfigDict()
  model.name = 'mlp'
  model.sigma_min = 0.01
  model.sigma_max = 50.0
  model.num_scales = 1000
  model.beta_min = 0.1
  model.beta_max = 20.0
  model.beta_schedule = 'linear'         # VP / sub-VP: 'linear' (the paper) | 'cosine' |
                                         # 'scaled_linear' (Stable Diffusion's)
  model.ema_rate = 0.9999
  model.scale_by_sigma = False
  model.dropout = 0.1
  model.embedding_type = 'positional'    # 'positional' | 'fourier'
  model.fourier_scale = 16.0
  model.nf = 128
  model.conditional = True
  model.precond = 'paper'                # 'paper' | 'edm' (Karras et al. 2022; models/precond.py)
  model.class_conditional = False        # a class embedding (data.num_classes + a null class)
  model.two_times = False                # a second time input r: MeanFlow's u(x, r, t) ('mlp', 'ncsnpp')
  model.dtype = 'float32'                # network compute: 'float32' | 'bfloat16' (params,
                                         # optimizer, EMA, loss stay float32; models/compute.py)
  model.remat = False                    # recompute each block's activations in the backward pass
  # DiT (models/dit.py): variant 'DiT-S/2' ... 'DiT-XL/8', or None and the four sizes below.
  model.variant = placeholder(str)
  model.patch_size = 2
  model.hidden_size = 384
  model.depth = 12
  model.num_heads = 6
  model.mlp_ratio = 4.0
  model.learn_sigma = False              # DiT's variance channels (kept for its checkpoints; unused)
  # Stable Diffusion's conditional UNet (models/unet_condition.py, name 'unet_condition'): it
  # cross-attends to a context (L, D) per example: text-encoder states or dataset embeddings.
  model.unet_preset = 'sd1'              # 'sd1' | 'sd2' | 'tiny'
  model.unet_channels = placeholder(tuple)   # None: the preset's block_out_channels
  model.context_dim = placeholder(int)   # D; None: the preset's cross_attention_dim (for
                                         # 'ncsnpp', 'dit', 'mlp': no context; set, NCSN++ /
                                         # DDPM++ and DiT cross-attend to it)
  model.context_heads = 1                # NCSN++ / DDPM++'s cross-attention heads
  model.context_length = 77              # L (CLIP's 77 tokens)
  model.unclip_tokens = 4                # unCLIP's decoder (models/unclip.py, 'unclip_decoder'):
                                         # context tokens projected from the image embedding

  # Text conditioning (sample.py --prompt): a transformers CLIPTextModel folder (config.json +
  # model.safetensors) and a tokenizer folder (vocab.json + merges.txt), e.g. the text_encoder/
  # and tokenizer/ folders of a Stable Diffusion 1.x repository. The empty prompt's states are
  # the null context of classifier-free guidance.
  config.text = text = ml_collections.ConfigDict()
  text.encoder = placeholder(str)
  text.tokenizer = placeholder(str)

  # The noise-conditional classifier of classifier guidance (models/classifier.py), trained by
  # `train.py --mode=train_classifier` into <workdir>/classifier.
  config.classifier = classifier = ml_collections.ConfigDict()
  classifier.name = 'mlp'                # 'mlp' (low-dimensional data) | 'wideresnet' (images)
  classifier.nf = 128                    # mlp: hidden width
  classifier.num_layers = 3              # mlp: residual blocks
  classifier.blocks_per_group = 4        # wideresnet: the paper's WRN-28-10
  classifier.channel_multiplier = 10
  classifier.n_iters = 2000
  classifier.batch_size = 512
  classifier.lr = 1e-3
  classifier.log_freq = 100
  classifier.snapshot_freq = 1000        # saved every snapshot_freq steps, at the end and on SIGTERM

  # The CLIP-style contrastive pair of unCLIP (models/contrastive.py): a text encoder over a
  # caption's words and an image encoder into one space of unit vectors, trained by
  # `train.py --mode=train_contrastive` into <workdir>/contrastive (symmetric InfoNCE).
  config.contrastive = contrastive = ml_collections.ConfigDict()
  contrastive.embed_dim = 32             # D of both embeddings
  contrastive.context_length = 4         # L: words per caption
  contrastive.text_width = 64
  contrastive.text_layers = 1
  contrastive.text_heads = 4
  contrastive.image_channels = (16, 32)  # conv widths, each followed by a 2x2 average pool
  contrastive.image_hidden = 64
  contrastive.n_iters = 600
  contrastive.batch_size = 256
  contrastive.lr = 2e-3
  contrastive.log_freq = 100
  contrastive.workdir = placeholder(str) # a trained pair's --workdir: prompts of a model
                                         # conditioned on its text embeddings (the prior)

  # The KL autoencoder of latent diffusion (models/autoencoder.py, diffusers' AutoencoderKL),
  # trained by `train.py --mode=train_autoencoder` into <workdir>/autoencoder. SD 1.x's sizes.
  config.autoencoder = autoencoder = ml_collections.ConfigDict()
  autoencoder.block_out_channels = (128, 256, 512, 512)
  autoencoder.layers_per_block = 2
  autoencoder.latent_channels = 4
  autoencoder.norm_num_groups = 32
  autoencoder.mid_block_add_attention = True
  autoencoder.scaling_factor = placeholder(float)   # None: 1 / std of the training latents
  autoencoder.scale_examples = 1024      # images that std is measured on
  autoencoder.recon_loss = 'l1'          # 'l1' | 'l2', summed over pixels
  autoencoder.kl_weight = 1e-6           # weight of KL(q(z|x) || N(0, I)) (LDM's kl-f8: 1e-6)
  autoencoder.batch_size = 64
  autoencoder.n_iters = 100000
  autoencoder.lr = 1e-4
  autoencoder.log_freq = 100
  autoencoder.eval_freq = 1000
  autoencoder.snapshot_freq = 5000       # saved every snapshot_freq steps, at the end and on SIGTERM
  model.sigma_data = 0.5                 # EDM preconditioning's data std
  model.parameterization = placeholder(str)   # network output: 'score' | 'eps' | 'x0' | 'velocity';
                                         # None: the SDE's default (VE: score, others: eps)
  model.t_max = 0.99                     # rectified flow: its end time T < 1 (m(1) = 0)
  model.rho = 7.0                        # EDM process: sigma(t) = (a + t (b - a))^rho,
                                         # a, b = sigma_min^(1/rho), sigma_max^(1/rho)
  model.P_mean = -1.2                    # EDM process: training ln sigma ~ N(P_mean, P_std^2)
  model.P_std = 1.2

  config.optim = optim = ml_collections.ConfigDict()
  optim.optimizer = 'Adam'
  optim.lr = 2e-4
  optim.beta1 = 0.9
  optim.eps = 1e-8
  optim.weight_decay = 0.0
  optim.warmup = 5000
  optim.grad_clip = 1.0
  optim.decay = 'none'                   # after warm-up: 'none' (the paper: constant lr) or
                                         # 'cosine' to lr_final_fraction * lr at training.n_iters
  optim.lr_final_fraction = 0.0
  return config
