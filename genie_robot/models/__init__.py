"""Genie's models: one ST-Transformer (st_transformer.py) reused by the video tokenizer, the latent
action model and the MaskGIT dynamics model; sampling in maskgit.py; the composition in genie.py;
configs and presets (tiny / cpu / paper) in configs.py."""

from .configs import (
    DynamicsConfig,
    GenieConfig,
    LatentActionConfig,
    QuantizerConfig,
    TokenizerConfig,
    TransformerConfig,
    link_dynamics,
    model_cost,
    preset,
)
from .dynamics import DynamicsModel
from .genie import Genie, Rollout
from .latent_actions import LatentActionModel
from .maskgit import Context, generate_next
from .quantizer import VectorQuantizer
from .st_transformer import STTransformer
from .tokenizer import VideoTokenizer

__all__ = [
    "TransformerConfig", "QuantizerConfig", "TokenizerConfig", "LatentActionConfig", "DynamicsConfig",
    "GenieConfig", "link_dynamics", "preset", "model_cost", "STTransformer", "VectorQuantizer",
    "VideoTokenizer", "LatentActionModel", "DynamicsModel", "Genie", "Rollout", "Context", "generate_next",
]
