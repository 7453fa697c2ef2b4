"""unCLIP (DALL-E 2, Ramesh et al. 2022) on the digits: a CLIP-style contrastive pair trained
here (``train.py --mode=train_contrastive``), a decoder conditioned on its image embeddings and
a diffusion prior from text embeddings to image embeddings."""
