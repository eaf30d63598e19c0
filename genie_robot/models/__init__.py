"""Genie's models: one ST-Transformer (st_transformer.py) reused by the video tokenizer, the latent
action model and the MaskGIT dynamics model; MaskGIT sampling in sampling.py (numpy, the one sampler: the
runtime's WorldModel runs it, on exported bundles and on these torch models alike); the composition in
genie.py; configs and presets (tiny / cpu / paper) in configs.py; the ablation variants beside the core,
in variants/ (they register with the core, which imports them on lookup)."""

from __future__ import annotations

import importlib

# name -> module, imported on first use (PEP 562) so that `genie_robot.models.configs` (what a bundle's
# config.json needs) does not import torch: the onnxruntime runtime reads configs without it
_EXPORTS = {
    **dict.fromkeys(["DynamicsConfig", "GenieConfig", "LatentActionConfig", "QuantizerConfig", "TokenizerConfig",
                     "TransformerConfig", "derived_dynamics_fields", "model_cost", "preset"], "configs"),
    "DynamicsModel": "dynamics", "Genie": "genie", "LatentActionModel": "latent_actions",
    "VectorQuantizer": "quantizer", "STTransformer": "st_transformer", "VideoTokenizer": "tokenizer",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
