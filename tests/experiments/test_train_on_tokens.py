"""experiments/train_on_tokens.py: a pack holds exactly the tokens and LAM actions the trainer would
compute, its windows stay inside one episode of one split, and `train` writes a stage-2 checkpoint that
the library loads and exports, with the bundle's tokenizer and LAM and a dynamics model of the new size."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from experiments.train_on_tokens import TokenWindows, main
from genie_robot.artifacts import checkpoints
from genie_robot.data.store import EpisodeStore
from genie_robot.data.windows import split_episodes
from genie_robot.models import Genie
from genie_robot.models.configs import DynamicsConfig, GenieConfig, preset
from genie_robot.runtime.bundle import load_genie
from genie_robot.runtime.export import export_bundle

STRIDE = 2


@pytest.fixture(scope="module")
def conv_bundle(tmp_path_factory):
    """A random-init bundle with a conv tokenizer (16x16, 25 codes) and a conv LAM (8 actions), stride 2."""
    root = tmp_path_factory.mktemp("tokens_bundle")
    base = preset("tiny")
    tok = dataclasses.replace(base.tokenizer, kind="conv", channels=(8, 8, 16), fsq_levels=(5, 5), local_encoder=True)
    lam = dataclasses.replace(base.lam, kind="conv", channels=(8, 8), decoder_channels=(8, 16), fsq_levels=(2, 2, 2))
    torch.manual_seed(0)
    genie = Genie(GenieConfig(tok, lam, DynamicsConfig(context=8, transformer=base.dynamics.transformer), name="tiny-conv"))
    with torch.no_grad():
        genie.dynamics.action_table.copy_(genie.lam.action_embeddings())
    model = genie.cfg.to_dict()
    model["data"]["frame_stride"] = STRIDE
    config = {"train": {"preset": "tiny", "model": {}, "frame_stride": STRIDE}, "model": model, "stage": "dynamics"}
    checkpoints.save_checkpoint(root / "dynamics", 1, weights=genie.state_dict(), config=config, state={"step": 1})
    out, _, _ = export_bundle(str(root / "dynamics"), root / "bundle", onnx=False)
    return str(out)


@pytest.fixture(scope="module")
def packed(conv_bundle, tmp_path_factory):
    from tests.conftest import make_episode
    from genie_robot.data.store import StoreWriter

    root = tmp_path_factory.mktemp("tokens_pack")
    stores = []
    for k, lengths in enumerate([[20, 17, 22, 20, 19, 21], [18, 30]]):
        path = str(root / f"s{k}.zarr")
        with StoreWriter(path, resolution=(16, 16), fps=10.0, source="tiny", camera="rgb", action_dim=2) as w:
            for i, n in enumerate(lengths):
                w.add_episode(make_episode(i, n, (16, 16), 2, None, None, k))
        stores.append(path)
    out = root / "pack.npz"
    assert main(["pack", "--model", conv_bundle, "--store", stores[0], "--store", stores[1], "--out", str(out)]) == 0
    return stores, out


def test_pack_holds_the_trainers_tokens_and_actions(conv_bundle, packed):
    stores, out = packed
    genie = load_genie(conv_bundle)
    data = dict(np.load(out))
    f = 0
    for k, path in enumerate(stores):
        store = EpisodeStore.open(path)
        val = set(split_episodes(store.num_episodes, "val", genie.cfg.data.val_fraction).tolist())
        for e in range(store.num_episodes):
            frames = torch.from_numpy(store.episode(e).rgb)
            L = len(frames)
            with torch.no_grad():
                window = frames[::STRIDE][None]  # what the trainer sees: every 2nd frame, from frame 0
                tokens = genie.tokenizer.encode(window)[0]
                actions = genie.lam.infer_actions(window)[0]
            np.testing.assert_array_equal(data["tokens_FN"][f:f + L][::STRIDE], tokens.numpy())
            np.testing.assert_array_equal(data["actions_F"][f:f + L][:-STRIDE][::STRIDE], actions.numpy())
            assert (data["actions_F"][f + L - STRIDE:f + L] == -1).all()  # no transition leaves the episode
            f += L
        e0 = sum(EpisodeStore.open(p).num_episodes for p in stores[:k])
        assert {e for e in range(store.num_episodes) if data["val_E"][e0 + e]} == val
    assert f == len(data["tokens_FN"]) and data["lengths_E"].sum() == f


def test_windows_stay_in_one_episode_of_their_split(packed):
    _, out = packed
    data = dict(np.load(out))
    episode_F = np.repeat(np.arange(len(data["lengths_E"])), data["lengths_E"])
    for split in ("train", "val"):
        w = TokenWindows(data, split, window=8, stride=STRIDE, device=torch.device("cpu"))
        tokens_BTN, actions_BTm1 = w.batch(64, torch.Generator().manual_seed(1))
        starts = w.starts.numpy()
        frames_ST = starts[:, None] + np.arange(8) * STRIDE
        assert (episode_F[frames_ST] == episode_F[frames_ST[:, :1]]).all()
        assert (data["val_E"][episode_F[starts]] == (split == "val")).all()
        assert (actions_BTm1 >= 0).all()  # every transition of a window is labelled
        hits = [(tokens_BTN[b] == torch.from_numpy(data["tokens_FN"][frames_ST].astype(np.int64))).flatten(1).all(1).any()
                for b in range(4)]
        assert all(hits)


def test_train_writes_a_checkpoint_the_library_loads_and_exports(conv_bundle, packed, tmp_path):
    _, out = packed
    run = tmp_path / "run"
    assert main(["train", "--tokens", str(out), "--model", conv_bundle, "--out", str(run), "--steps", "3",
                 "--batch", "4", "--width", "48", "--depth", "3", "--val-every", "2", "--device", "cpu"]) == 0
    genie, used = checkpoints.load_genie(run)
    assert len(genie.dynamics.transformer.blocks) == 3 and genie.cfg.dynamics.transformer.width == 48
    assert genie.cfg.dynamics.mask_per == "frame" and genie.cfg.data.frame_stride == STRIDE
    bundle = load_genie(conv_bundle)
    for name in ("tokenizer", "lam"):
        for k, v in getattr(bundle, name).state_dict().items():
            torch.testing.assert_close(getattr(genie, name).state_dict()[k], v, rtol=0, atol=0)
    torch.testing.assert_close(genie.dynamics.action_table, bundle.lam.action_embeddings())
    exported, _, _ = export_bundle(str(run), tmp_path / "bundle", onnx=False)
    assert load_genie(exported).cfg.dynamics.transformer.depth == 3


def test_train_refuses_a_pack_of_other_weights(packed, tmp_path):
    _, out = packed
    with pytest.raises(SystemExit, match="packed with other tokenizer/LAM weights"):
        main(["train", "--tokens", str(out), "--model", "default", "--out", str(tmp_path / "run"), "--steps", "1"])


def test_warm_start_begins_from_the_bundles_dynamics(conv_bundle, packed, tmp_path):
    """At learning rate 0 a warm-started run writes back the bundle's own dynamics weights (its size and
    heads kept), so the weights it trains from are the bundle's; a size next to --warm-start is refused."""
    _, out = packed
    run = tmp_path / "run"
    assert main(["train", "--tokens", str(out), "--model", conv_bundle, "--out", str(run), "--steps", "2",
                 "--batch", "4", "--lr", "0", "--warm-start", "--device", "cpu"]) == 0
    genie, _ = checkpoints.load_genie(run)
    bundle = load_genie(conv_bundle)
    assert genie.cfg.dynamics.transformer == bundle.cfg.dynamics.transformer
    for k, v in bundle.dynamics.state_dict().items():
        torch.testing.assert_close(genie.dynamics.state_dict()[k], v, rtol=0, atol=0)
    with pytest.raises(SystemExit, match="--warm-start fine-tunes"):
        main(["train", "--tokens", str(out), "--model", conv_bundle, "--out", str(tmp_path / "run2"), "--steps", "1",
              "--width", "48", "--warm-start", "--device", "cpu"])
