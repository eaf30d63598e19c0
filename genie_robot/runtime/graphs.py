"""The contract between the runtime's host code and its four single-frame graphs, torch-free: the
graphs' names, their inputs, and the shape of each graph's ring cache. `torch_backend.py` builds the
graphs as torch modules (and says what they compute), `export.py` writes them as ONNX,
`onnx_backend.py` runs those files; `world_model.py` (the host) allocates the caches from
`cache_shapes` and never needs torch to do it.

Every graph processes ONE frame at absolute index `pos` against a read-only ring cache and returns that
frame's new keys/values; the host writes them into ring slot `pos % R` once the frame is final.

    kv:     (L, 2, B, N, G, R, E)    keys/values of the last R frames, per layer (host array)
    new_kv: (L, 2, B, N, G, E)       this frame's keys/values (graph output)
    pos:    () int64

    tokenizer_encoder: frames_BHW3 uint8, kv..., pos -> tokens_BN int64, new_kv
    tokenizer_decoder: tokens_BN int64, kv..., pos   -> frames_BHW3 uint8, new_kv
    lam_encoder:       frames_BHW3 uint8, kv..., pos -> action_B int64 (labels frame pos-1 -> pos), new_kv
    dynamics_step:     tokens_BN int64, action_B int64, kv..., pos -> logits_BNV float32, new_kv

Shape letters here: L layers, B batch, N tokens per frame (the LAM's N counts its action query), G
heads, R cache slots (the component's context), E head dim.
"""

from __future__ import annotations

GRAPHS = ("tokenizer_encoder", "tokenizer_decoder", "lam_encoder", "dynamics_step")

# graph inputs in call order; "kv" is fed as per-layer inputs k0, v0, k1, v1, ...
INPUTS = {
    "tokenizer_encoder": ("frames", "kv", "pos"),
    "tokenizer_decoder": ("tokens", "kv", "pos"),
    "lam_encoder": ("frames", "kv", "pos"),
    "dynamics_step": ("tokens", "action", "kv", "pos"),
}


def cache_shapes(cfg) -> dict[str, tuple[int, ...]]:
    """Per-graph cache shape with the batch axis (index 2) set to 1: (L, 2, 1, N, G, R, E).

    Conv kinds (TokenizerConfig.kind / LatentActionConfig.kind == "conv") keep the same protocol with
    small caches: the conv tokenizer's frames are independent, so its cache is a dummy
    (1, 2, 1, 1, 1, context, 1) that keeps the host's ring arithmetic (slot pos % context) the same;
    the conv LAM's (1, 2, 1, 1, 1, 1, H*W*3) holds the previous frame's pixels."""
    t, a, d = cfg.tokenizer, cfg.lam, cfg.dynamics

    def shape(c, n, window):
        return (c.depth, 2, 1, n, c.heads, window, c.width // c.heads)

    if t.kind == "conv":
        tok_enc = tok_dec = (1, 2, 1, 1, 1, t.context, 1)
    else:
        tok_enc, tok_dec = shape(t.encoder, t.num_tokens, t.context), shape(t.decoder, t.num_tokens, t.context)
    H, W = a.resolution
    lam = (1, 2, 1, 1, 1, 1, H * W * 3) if a.kind == "conv" else shape(a.encoder, a.num_tokens + 1, a.context)
    return {
        "tokenizer_encoder": tok_enc,
        "tokenizer_decoder": tok_dec,
        "lam_encoder": lam,
        "dynamics_step": shape(d.transformer, d.num_tokens, d.context),
    }
