"""The ablation variants (docs/ablations.md): ViT / C-ViViT tokenizers and the token-input LAM.

What each variant promises: the attention pattern it names (ViT: no information across frames;
C-ViViT: a token sees other positions of earlier frames, which ST-ViViT's temporal layer does not),
causality, streaming == whole clip, a clear error in the runtime's cached path, the same parameter
count as ST-ViViT, old config dicts still loading, and the token LAM reading tokens and learning.
And where they live (models/variants/, registered with the core): the core modules do not branch on
their flags, the registries map each config value to its class, state_dict keys are unchanged.
"""

import ast
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genie_robot.models import Genie, GenieConfig, VideoTokenizer, model_cost, preset
from genie_robot.models.genie import build_lam
from genie_robot.models.latent_actions import LatentActionModel
from genie_robot.models.st_transformer import STTransformer
from genie_robot.models.configs import TransformerConfig


def variant(attention="st", lam_input="pixels") -> GenieConfig:
    d = preset("tiny").to_dict()
    d["tokenizer"]["attention"] = attention
    if lam_input == "tokens":
        d["lam"].update(input="tokens", patch=d["tokenizer"]["patch"],
                        token_vocab=d["tokenizer"]["quantizer"]["num_codes"])
    return GenieConfig.from_dict(d)


def st(attention, window=4):
    return STTransformer(TransformerConfig(16, 2, 2, 32), num_tokens=3, window=window, attention=attention).eval()


def test_old_config_dicts_load_with_the_defaults():
    d = preset("cpu").to_dict()
    del d["tokenizer"]["attention"], d["lam"]["token_vocab"]
    cfg = GenieConfig.from_dict(d)
    assert cfg.tokenizer.attention == "st" and cfg.lam.input == "pixels" and cfg == preset("cpu")


def test_bad_values_are_refused_with_the_options():
    d = preset("tiny").to_dict()
    d["tokenizer"]["attention"] = "axial"
    with pytest.raises(ValueError, match="'st'.*'spatial'.*'full'"):
        GenieConfig.from_dict(d)
    d = preset("tiny").to_dict()
    d["lam"]["input"] = "tokens"
    with pytest.raises(ValueError, match="token_vocab"):
        GenieConfig.from_dict(d)
    d["lam"]["token_vocab"] = 7
    with pytest.raises(ValueError, match="patch"):
        GenieConfig.from_dict(d)


@pytest.mark.parametrize("attention", ["spatial", "full"])
def test_variants_have_the_st_parameter_count_and_model_cost_counts_them(attention):
    cfg = variant(attention)
    tok = VideoTokenizer(cfg.tokenizer)
    n = sum(p.numel() for p in tok.parameters())
    assert n == sum(p.numel() for p in VideoTokenizer(preset("tiny").tokenizer).parameters())
    assert model_cost(cfg)["tokenizer"]["params"] == n
    flops = {a: model_cost(variant(a))["tokenizer"]["decode_flops_per_frame"] for a in ("st", "spatial", "full")}
    assert flops["st"] < flops["full"]  # C-ViViT attends N * frames keys, ST-ViViT frames


@pytest.mark.parametrize("t", [1, 2])
def test_vit_mixes_no_frames_cvivit_sees_other_positions_of_earlier_frames(t):
    torch.manual_seed(0)
    models = {a: st(a) for a in ("st", "spatial", "full")}
    x = torch.randn(2, 4, 3, 16)
    y = {a: m(x) for a, m in models.items()}
    x2 = x.clone()
    x2[:, t - 1, 0] = 3 * torch.randn(2, 16)  # change position 0 of frame t-1 only
    y2 = {a: m(x2) for a, m in models.items()}
    for a in y:  # causal: frames before t-1 never change
        torch.testing.assert_close(y2[a][:, : t - 1], y[a][:, : t - 1], rtol=0, atol=0)
    # ViT: nothing after frame t-1 changes (frames are independent); the others carry it forward
    torch.testing.assert_close(y2["spatial"][:, t:], y["spatial"][:, t:], rtol=0, atol=0)
    assert not torch.allclose(y2["full"][:, t], y["full"][:, t])
    assert not torch.allclose(y2["st"][:, t], y["st"][:, t])


def test_full_attention_differs_from_st_in_what_one_layer_sees():
    """With one block and no spatial mixing, ST-ViViT's frame t position 1 cannot see frame t-1
    position 0; C-ViViT's can."""
    torch.manual_seed(0)
    m = {a: STTransformer(TransformerConfig(16, 1, 2, 32), 3, 4, attention=a).eval() for a in ("st", "full")}
    for mod in m.values():
        for blk in mod.blocks:
            torch.nn.init.zeros_(blk.spatial.out.weight)  # switch spatial mixing off
    x = torch.randn(1, 3, 3, 16)
    x2 = x.clone()
    x2[:, 0, 0] = 3 * torch.randn(16)
    torch.testing.assert_close(m["st"](x2)[:, 1, 1], m["st"](x)[:, 1, 1], rtol=0, atol=0)
    assert not torch.allclose(m["full"](x2)[:, 1, 1], m["full"](x)[:, 1, 1])


@pytest.mark.parametrize("attention", ["spatial", "full"])
@pytest.mark.parametrize("T", [3, 7])  # 7 slides past the window of 4
def test_variant_cached_steps_equal_full_recompute(attention, T):
    torch.manual_seed(0)
    m = st(attention)
    x = torch.randn(2, T, 3, 16)
    full = m(x)
    kv = m.init_cache(2)
    for t in range(T):
        y, new = m.step(x[:, t], kv, t)
        m.write(kv, new, t)
        torch.testing.assert_close(y, full[:, t], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attention", ["spatial", "full"])
def test_variant_tokenizer_streams_like_the_whole_clip_and_is_causal(attention, make_random_frames):
    cfg = variant(attention)
    tok = VideoTokenizer(cfg.tokenizer).eval()
    frames = make_random_frames(cfg, B=2, T=cfg.tokenizer.context + 2)
    tokens = tok.encode(frames)
    pixels = tok.decode(tokens)
    enc_kv, dec_kv = tok.init_cache(2, "encoder"), tok.init_cache(2, "decoder")
    for t in range(frames.shape[1]):
        tk, enc_kv = tok.encode_step(frames[:, t], enc_kv, t)
        px, dec_kv = tok.decode_step(tokens[:, t], dec_kv, t)
        assert (tk != tokens[:, t]).float().mean() <= 0.02  # fp ties in the argmax at most
        assert (px.int() - pixels[:, t].int()).abs().max() <= 1
    later = frames.clone()
    later[:, 3:] = make_random_frames(cfg, B=2, T=frames.shape[1], seed=5)[:, 3:]
    assert torch.equal(tok.encode(later)[:, :3], tokens[:, :3])


@pytest.mark.parametrize("attention", ["spatial", "full"])
def test_the_runtime_step_runs_the_variants_like_the_model(attention, make_random_frames):
    """One cached step (STTransformer.step, each block's own `step`): the runtime's torch graphs run
    the ViT and C-ViViT tokenizers too, and decode what the model's streaming decoder decodes."""
    from genie_robot.runtime.graphs import cache_shapes
    from genie_robot.runtime.torch_backend import layer_views, step_modules

    cfg = variant(attention)
    genie = Genie(cfg).eval()
    tok = genie.tokenizer
    tokens = tok.encode(make_random_frames(cfg, B=2, T=cfg.tokenizer.context + 2))
    dec = step_modules(genie)["tokenizer_decoder"]
    s = cache_shapes(cfg)["tokenizer_decoder"]
    kv, kv_model = torch.zeros(s[:2] + (2,) + s[3:]), tok.init_cache(2, "decoder")
    with torch.no_grad():
        for t in range(tokens.shape[1]):
            frames, new = dec(tokens[:, t], layer_views(kv), torch.tensor(t))
            kv[:, :, :, :, :, t % s[5]] = new
            ref, kv_model = tok.decode_step(tokens[:, t], kv_model, t)
            assert (frames.int() - ref.int()).abs().max() <= 1


def test_token_lam_reads_tokens_on_the_tokenizer_grid(make_random_frames):
    cfg = variant(lam_input="tokens")
    genie = Genie(cfg).eval()
    lam = genie.lam
    assert cfg.lam.grid == cfg.tokenizer.grid
    assert model_cost(cfg)["lam"]["params"] == sum(p.numel() for p in lam.parameters())
    assert not any(k.startswith("tokenizer") for k in lam.state_dict())  # a reference, not a copy
    frames = make_random_frames(cfg, B=2, T=5)
    tokens = genie.tokenizer.encode(frames)
    acts = lam.infer_actions(frames)  # tokens from the attached tokenizer
    assert torch.equal(acts, lam.infer_actions(frames, tokens))
    assert acts.shape == (2, 4) and 0 <= acts.min() and acts.max() < cfg.lam.num_actions
    # it reads only the tokens: frames with the same tokens give the same actions
    assert torch.equal(lam.infer_actions(torch.zeros_like(frames), tokens), acts)
    # causal: action t (x_t -> x_{t+1}) does not depend on tokens after t+1
    other = tokens.clone()
    other[:, 3:] = (other[:, 3:] + 1) % cfg.tokenizer.quantizer.num_codes
    assert torch.equal(lam.infer_actions(frames, other)[:, :2], acts[:, :2])
    with pytest.raises(ValueError, match="tokens"):
        build_lam(cfg.lam).infer_actions(frames)  # no tokenizer attached, no tokens given
    from genie_robot.runtime.torch_backend import step_modules

    with pytest.raises(NotImplementedError, match="input='pixels'"):
        step_modules(genie)


def test_token_lam_trains_in_stage_two_and_learns(make_video):
    """Genie.dynamics_loss passes the tokens; the LAM's next-frame loss falls on learnable clips."""
    torch.manual_seed(0)
    cfg = variant(lam_input="tokens")
    genie = Genie(cfg)
    genie.tokenizer.requires_grad_(False).eval()
    frames, _ = make_video(cfg, B=4, T=5)
    opt = torch.optim.Adam([p for p in genie.parameters() if p.requires_grad], lr=3e-3)
    first = None
    for _ in range(60):
        loss, metrics = genie.dynamics_loss(frames)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else metrics["lam/mse"]
    assert metrics["lam/mse"] < 0.5 * first
    assert genie.lam.token_embed.weight.grad is not None


def test_default_state_dict_is_unchanged_by_the_variant_code():
    # the paper's kinds at the cpu preset's sizes (the preset itself now uses the conv kinds)
    from genie_robot.models import DynamicsConfig

    cpu = preset("cpu")
    tok = dataclasses.replace(cpu.tokenizer, kind="st_vivit")
    lam = dataclasses.replace(cpu.lam, kind="st_transformer")
    dyn = DynamicsConfig(context=cpu.dynamics.context, transformer=cpu.dynamics.transformer)
    genie = Genie(GenieConfig(tok, lam, dyn))
    keys = list(genie.state_dict())
    assert not any("attn_2" in k or "token_embed" in k and k.startswith("lam") for k in keys)
    assert "lam.patch_embed.weight" in keys and "tokenizer.encoder.blocks.0.temporal.qkv.weight" in keys
    vit = Genie(dataclasses.replace(preset("tiny"), tokenizer=dataclasses.replace(preset("tiny").tokenizer, attention="spatial")))
    assert "tokenizer.encoder.blocks.0.attn_2.qkv.weight" in vit.state_dict()


# ------------------------------------------------------------- the variants live beside the core

MODELS = Path(__file__).resolve().parents[2] / "genie_robot" / "models"
LAM_FLAGS = {"input", "decoder_frames", "latent_norm", "decoder_residual", "token_vocab"}


def _code(path: Path) -> tuple[set[str], set[str], set[str]]:
    """(attribute names read, class names defined, string constants that are not docstrings) in a module."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    classes = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    strings = {n.value for n in ast.walk(tree)
               if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings}
    return attrs, classes, strings


def test_the_core_modules_do_not_branch_on_the_variants():
    attrs, classes, strings = _code(MODELS / "st_transformer.py")
    assert classes == {"Attention", "STBlock", "STTransformer"}
    assert not {"spatial", "full"} & strings
    attrs, classes, strings = _code(MODELS / "latent_actions.py")
    assert not (LAM_FLAGS | {"token_embed", "dec_token_embed", "latent_norm", "tokenizer"}) & attrs
    assert classes == {"LatentActionModel"} and not {"tokens", "batch"} & strings
    attrs, _, strings = _code(MODELS / "genie.py")
    assert not LAM_FLAGS & attrs and "tokens" not in strings


def test_the_registries_map_each_config_value_to_its_class():

    from genie_robot.models.latent_actions import LAM_VARIANTS, lam_class
    from genie_robot.models.st_transformer import BLOCKS, STBlock
    from genie_robot.models.variants import frame_attention as fa, lam_variants as lv

    assert BLOCKS == {"st": STBlock, "spatial": fa.ViTBlock, "full": fa.CViViTBlock}
    for attention, block in BLOCKS.items():
        assert type(st(attention).blocks[0]) is block
        assert {type(b) for b in VideoTokenizer(variant(attention).tokenizer).decoder.blocks} == {block}
    with pytest.raises(ValueError, match="'st', 'spatial', 'full'"):
        st("axial")

    expected = {("input", "tokens"): lv.TokenInputLAM, ("decoder_frames", 1): lv.OneFrameDecoderLAM,
                ("latent_norm", "batch"): lv.BatchNormLatentLAM, ("decoder_residual", True): lv.ResidualDecoderLAM}
    assert LAM_VARIANTS == expected
    tiny = variant(lam_input="tokens").lam  # a config on which every flag is valid
    default = dataclasses.replace(tiny, input="pixels")
    assert lam_class(default) is LatentActionModel and type(build_lam(default)) is LatentActionModel
    for (name, value), cls in expected.items():
        cfg = dataclasses.replace(default, **{name: value})
        assert lam_class(cfg) is cls and type(build_lam(cfg)) is cls
        with pytest.raises(ValueError, match="build_lam"):  # the core class refuses a variant's config
            LatentActionModel(cfg)
    both = dataclasses.replace(tiny, decoder_frames=1, latent_norm="batch", decoder_residual=True)
    lam = build_lam(both)
    assert type(lam) is lam_class(both)
    assert all(isinstance(lam, cls) for cls in expected.values())


def test_variant_state_dict_keys_are_the_single_models():
    """The keys the flags of one model class used to switch (checkpoints of the variants load strictly)."""


    cfg = dataclasses.replace(variant(lam_input="tokens").lam, decoder_frames=1, latent_norm="batch",
                              decoder_residual=True)
    keys = set(build_lam(cfg).state_dict())
    pixels = set(build_lam(dataclasses.replace(cfg, input="pixels", latent_norm="none")).state_dict())
    swap = {"patch_embed.weight": "token_embed.weight", "dec_patch_embed.weight": "dec_token_embed.weight"}
    norm = {"latent_norm.running_mean", "latent_norm.running_var", "latent_norm.num_batches_tracked"}
    assert keys == {swap.get(k, k) for k in pixels - {"patch_embed.bias", "dec_patch_embed.bias"}} | norm
    vit = VideoTokenizer(variant("spatial").tokenizer).state_dict()
    assert set(vit) == {k.replace("norm_t", "norm_2").replace("temporal", "attn_2")
                        for k in VideoTokenizer(variant("st").tokenizer).state_dict()}


def test_a_fresh_interpreter_that_imports_only_a_core_module_sees_the_variants():
    """The core imports models/variants/ on lookup, so no caller has to remember to."""
    script = (
        "import dataclasses\n"
        "from genie_robot.models.configs import TransformerConfig, preset\n"
        "from genie_robot.models.genie import build_lam\n"
        "from genie_robot.models.st_transformer import STTransformer\n"
        "assert type(STTransformer(TransformerConfig(16, 1, 2, 32), 3, 4, attention='full').blocks[0]).__name__ "
        "== 'CViViTBlock'\n"
        "lam = build_lam(dataclasses.replace(preset('tiny').lam, decoder_frames=1))\n"
        "assert type(lam).__name__ == 'OneFrameDecoderLAM', type(lam)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr
