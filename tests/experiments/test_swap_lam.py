"""experiments/swap_lam.py: a trained dynamics model gets another LAM; everything but its action input is
kept, the action input is the least-squares map from the new actions to the old ones' embeddings, and
`genie-robot train dynamics --init` warm-starts from the result."""

from __future__ import annotations

import dataclasses

import torch

from experiments.swap_lam import fit_action_embed, main
from genie_robot.artifacts import checkpoints
from genie_robot.cli import main as cli
from genie_robot.models.genie import build_lam


def test_the_fit_recovers_an_exact_linear_map():
    torch.manual_seed(0)
    codes_ZD = torch.randn(50, 3)
    weight, bias = torch.randn(8, 3), torch.randn(8)
    w, b = fit_action_embed(codes_ZD @ weight.T + bias, codes_ZD)
    torch.testing.assert_close((w, b), (weight, bias), rtol=0, atol=1e-4)


def test_swapped_model_keeps_the_dynamics_and_trains_on_the_new_lam(tmp_path, tiny_store, stride2_bundle):
    from genie_robot.runtime import bundle

    torch.manual_seed(0)
    store = tiny_store(4, length=20, action_dim=4)
    genie = bundle.load_genie(stride2_bundle)
    weights = genie.state_dict()
    lam_cfg = dataclasses.replace(genie.cfg.lam, kind="conv", fsq_levels=(4, 4))
    lam = build_lam(lam_cfg)
    lam_model = dataclasses.replace(genie.cfg, lam=lam_cfg).to_dict()
    checkpoints.save_checkpoint(tmp_path / "lam", 3, weights=lam.state_dict(), state={"step": 3},
                                config={"stage": "lam", "train": {"preset": "tiny", "model": {}}, "model": lam_model})

    assert main(["--from", str(stride2_bundle), "--lam", str(tmp_path / "lam"), "--store", store,
                 "--out", str(tmp_path / "swapped")]) == 0

    ck = checkpoints.load_checkpoint(tmp_path / "swapped", with_state=False)
    cfg = checkpoints.genie_config(ck.config)
    assert (cfg.dynamics.num_actions, cfg.dynamics.action_dim, cfg.lam.fsq_levels) == (16, 2, (4, 4))
    new = ck.ema
    assert new["dynamics.action_embed.weight"].shape == (cfg.dynamics.transformer.width, 2)
    torch.testing.assert_close(new["dynamics.action_table"], lam.action_embeddings())
    kept = [k for k in weights if k.startswith(("dynamics.", "tokenizer.")) and "action_" not in k]
    assert kept and all(torch.equal(new[k], weights[k]) for k in kept)
    assert all(torch.equal(new[f"lam.{k}"], v) for k, v in lam.state_dict().items())

    # the swapped checkpoint is a warm start for stage 2 on the new LAM
    code = cli(["train", "dynamics", "--store", store, "--preset", "tiny", "--tokenizer", str(stride2_bundle),
                "--lam", str(tmp_path / "lam"), "--init", str(tmp_path / "swapped"), "--run-dir", str(tmp_path / "ft"),
                "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--set", "frame_stride=2", "--set", "model.lam.kind=conv",
                "--set", "model.lam.fsq_levels=[4,4]", "--set", "batch_size=2", "--set", "max_steps=1",
                "--set", "val_batches=1", "--set", "sample_every=0", "--set", "warmup_steps=1"])
    assert code == 0
    assert checkpoints.latest_checkpoint(tmp_path / "ft") is not None


def test_fsq_levels_read_the_lam_by_its_signs(tmp_path, tiny_store, stride2_bundle):
    """--fsq-levels 2,2 on a (4, 4) LAM: the same weights, its 4 directions as 4 actions (±1 codes);
    a level count that does not match the LAM's latent is refused with both shapes named."""
    import pytest

    from genie_robot.runtime import bundle

    torch.manual_seed(0)
    store = tiny_store(4, length=20, action_dim=4)
    genie = bundle.load_genie(stride2_bundle)
    lam_cfg = dataclasses.replace(genie.cfg.lam, kind="conv", fsq_levels=(4, 4))
    lam = build_lam(lam_cfg)
    checkpoints.save_checkpoint(tmp_path / "lam", 3, weights=lam.state_dict(), state={"step": 3},
                                config={"stage": "lam", "train": {"preset": "tiny", "model": {}},
                                        "model": dataclasses.replace(genie.cfg, lam=lam_cfg).to_dict()})

    assert main(["--from", str(stride2_bundle), "--lam", str(tmp_path / "lam"), "--store", store,
                 "--fsq-levels", "2,2", "--out", str(tmp_path / "signs")]) == 0
    ck = checkpoints.load_checkpoint(tmp_path / "signs", with_state=False)
    cfg = checkpoints.genie_config(ck.config)
    assert (cfg.dynamics.num_actions, cfg.lam.fsq_levels) == (4, (2, 2))
    table = ck.ema["dynamics.action_table"]
    assert table.shape == (4, 2) and set(table.abs().flatten().tolist()) == {1.0}
    assert all(torch.equal(ck.ema[f"lam.{k}"], v) for k, v in lam.state_dict().items())
    relevelled = checkpoints.load_stage(tmp_path / "signs" / "lam", "lam")
    assert checkpoints.genie_config(relevelled.config).lam.fsq_levels == (2, 2)
    assert all(torch.equal(relevelled.weights[k], v) for k, v in lam.state_dict().items())

    code = cli(["train", "dynamics", "--store", store, "--preset", "tiny", "--tokenizer", str(stride2_bundle),
                "--lam", str(tmp_path / "signs" / "lam"), "--init", str(tmp_path / "signs"),
                "--run-dir", str(tmp_path / "ft"), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
                "--set", "frame_stride=2", "--set", "model.lam.kind=conv", "--set", "model.lam.fsq_levels=[2,2]",
                "--set", "batch_size=2", "--set", "max_steps=1", "--set", "val_batches=1", "--set", "sample_every=0",
                "--set", "warmup_steps=1"])
    assert code == 0

    with pytest.raises(SystemExit, match=r"2 dims \(\[4, 4\]\)"):
        main(["--from", str(stride2_bundle), "--lam", str(tmp_path / "lam"), "--store", store,
              "--fsq-levels", "2,2,2", "--out", str(tmp_path / "bad")])
