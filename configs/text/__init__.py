"""Text-to-image configs: Stable Diffusion's conditional UNet (``model.name='unet_condition'``)
cross-attending to a CLIP text encoder's states (``config.text``), sampled with
``sample.py --prompt``."""
