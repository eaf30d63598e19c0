"""Runtime fixtures: a stage-2 checkpoint of the `tiny` model (random init, saved with the training
checkpoint module) and the bundle `genie-robot export` makes from it, built once per session
(the dynamo export is the slow part, ~5 s per graph)."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def make_checkpoint(run_dir, seed: int = 0, preset_name: str = "tiny", run_id: str | None = None):
    from genie_robot.artifacts import checkpoints as ckpt_io
    from genie_robot.models import Genie, preset

    torch.manual_seed(seed)
    genie = Genie(preset(preset_name))
    with torch.no_grad():
        genie.dynamics.action_table.copy_(genie.lam.action_embeddings())
    config = {"train": {"preset": preset_name, "model": {}}, "model": genie.cfg.to_dict(), "stage": "dynamics"}
    path = ckpt_io.save_checkpoint(run_dir, 1, weights=genie.state_dict(), config=config,
                                   state={"step": 1, "mlflow_run_id": run_id})
    return path, genie.eval()


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny tensors: one thread is fastest, and on a loaded machine a second one mostly waits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """-> (bundle dir, checkpoint dir, the Genie that was saved)."""
    from genie_robot.cli import main

    root = tmp_path_factory.mktemp("export")
    ckpt, genie = make_checkpoint(root / "runs" / "dynamics")
    out = root / "bundle"
    assert main(["export", "--dynamics", str(root / "runs" / "dynamics"), "--out", str(out)]) == 0
    return out, ckpt, genie


@pytest.fixture(scope="session")
def onnx_wm(tiny_export):
    from genie_robot.runtime.world_model import WorldModel

    return WorldModel.load(tiny_export[0], backend="onnx", threads=1)


@pytest.fixture(scope="session")
def torch_wm(tiny_export):
    from genie_robot.runtime.world_model import WorldModel

    return WorldModel.load(tiny_export[0], backend="torch")


@pytest.fixture
def prompt():
    """(T=3, 16, 16, 3) uint8: a smooth moving pattern (not noise, so the resize check is meaningful)."""
    yy, xx = np.mgrid[0:16, 0:16]
    frames = [np.stack([(xx * 16 + 8 * t) % 256, (yy * 16) % 256, np.full_like(xx, 40 * t)], -1) for t in range(3)]
    return np.asarray(frames, dtype=np.uint8)


@torch.no_grad()
def greedy_reference_tokens(genie, prompt_THW3: np.ndarray, actions: list[int], steps: int = 3) -> torch.Tensor:
    """What a greedy (temperature 0, confidence order) rollout must sample, made without any cache: the
    prompt through the torch tokenizer and LAM, then every new frame by the library's sampler over the
    dynamics model's whole-sequence forward (banded past its context) -> tokens (1, len(actions), N)."""
    from genie_robot.models.sampling import sample_frame

    video = torch.from_numpy(prompt_THW3)[None]
    seq, acts = genie.tokenizer.encode(video), genie.lam.infer_actions(video)
    for a in actions:
        acts = torch.cat([acts, torch.tensor([[a]])], 1)

        def full_forward(tokens_BN, conditions, seq=seq, acts=acts):  # guidance 1: conditions == (True,)
            return [genie.dynamics(torch.cat([seq, torch.from_numpy(tokens_BN)[:, None]], 1), acts)[:, -1].numpy()]

        new = sample_frame(full_forward, 1, seq.shape[2], genie.dynamics.mask_id, steps=steps, temperature=0.0,
                           order="confidence", guidance=1.0, rng=np.random.default_rng(0))
        seq = torch.cat([seq, torch.from_numpy(new)[:, None]], 1)
    return seq[:, -len(actions):]


@pytest.fixture(scope="session")
def greedy_reference():
    """`greedy_reference_tokens` above."""
    return greedy_reference_tokens

