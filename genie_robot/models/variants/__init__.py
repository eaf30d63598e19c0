"""Ablation variants of the core models, beside them rather than inside them: each lives in its own
module and registers itself with the core on import (the core imports this package when it looks one
up, so every way of building a model sees them).

  frame_attention.py  the tokenizer ablation (Genie, Table 3): ViT and C-ViViT blocks
                      -> st_transformer.BLOCKS, chosen by TokenizerConfig.attention
  lam_variants.py     the LAM input ablation (Genie, Table 2) and this repo's fixes against code collapse
                      -> latent_actions.LAM_VARIANTS, chosen by LatentActionConfig fields
"""

from . import frame_attention, lam_variants

__all__ = ["frame_attention", "lam_variants"]
