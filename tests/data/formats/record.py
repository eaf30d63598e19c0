"""Records the on-disk formats and the frames they produce, for tests/test_formats_stable.py.

Run once, before a change that must keep numerics and formats (issue #15), from the repository root:

    .venv/bin/python tests/data/formats/record.py

It writes, next to this file:
    tiny_run/       a `tiny` preset dynamics run directory as the trainer wrote it (random weights, seed 0)
    tiny_bundle/    the bundle `genie-robot export` made from it, ONNX graphs included
    frames.npz      what those and the shipped default bundle produced then: prompt, actions, rollout
                    frames on both backends, LAM actions and tokenizer tokens of the prompt

Do not re-run it to make a failing test pass: a difference is a change of numerics or format.
The one exception is a new shipped default model (new weights on purpose): then

    .venv/bin/python tests/data/formats/record.py --default-only

records the new model's frames and leaves the tiny run, bundle and frames as they were.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 7


def rollouts(wm, prompt, actions) -> dict[str, np.ndarray]:
    return {"frames": wm.rollout(prompt, actions, seed=SEED), "lam": wm.infer_actions(prompt),
            "tokens": wm.encode(prompt)}


def main(default_only: bool = False) -> None:
    import torch

    sys.path.insert(0, str(HERE.parents[1] / "runtime"))
    from conftest import make_checkpoint  # tests/runtime/conftest.py: the tiny checkpoint of the test suite

    from genie_robot.cli import main as cli
    from genie_robot.data.sim.simulate import generate_episode
    from genie_robot.runtime.world_model import WorldModel

    torch.set_num_threads(1)
    default_prompt = generate_episode(SEED, 10, resolution=64, scene="mix").rgb[::3]  # 4 frames, stride 3
    default_actions = np.array([[0, 3, 5, 7, 1], [6, 6, 2, 4, 0]])
    models = [("default", "default", default_prompt, default_actions)]
    if default_only:  # a new shipped model on purpose: its entries only, the tiny ones stay
        out = {k: v for k, v in np.load(HERE / "frames.npz").items() if not k.startswith("default/")}
    else:
        for name in ("tiny_run", "tiny_bundle"):
            shutil.rmtree(HERE / name, ignore_errors=True)
        make_checkpoint(HERE / "tiny_run", seed=0)
        assert cli(["export", "--dynamics", str(HERE / "tiny_run"), "--out", str(HERE / "tiny_bundle")]) == 0
        tiny_wm = WorldModel.load(HERE / "tiny_bundle", backend="onnx", threads=1)
        rng = np.random.default_rng(SEED)
        tiny_prompt = rng.integers(0, 256, (3, *tiny_wm.resolution, 3), dtype=np.uint8)
        tiny_actions = rng.integers(0, tiny_wm.num_actions, (2, 4))
        out = {"tiny/prompt": tiny_prompt, "tiny/actions": tiny_actions}
        models.append(("tiny", HERE / "tiny_bundle", tiny_prompt, tiny_actions))
    out["default/prompt"], out["default/actions"] = default_prompt, default_actions
    with tempfile.TemporaryDirectory() as cache:
        import os

        os.environ["GENIE_ROBOT_CACHE"] = cache
        for backend in ("onnx", "torch"):
            for name, model, prompt, actions in models:
                wm = WorldModel.load(model, backend=backend, threads=1)
                for key, value in rollouts(wm, prompt, actions).items():
                    out[f"{name}/{backend}/{key}"] = value
    np.savez_compressed(HERE / "frames.npz", **out)
    print("wrote", HERE / "frames.npz", sorted(out))

if __name__ == "__main__":
    main(default_only="--default-only" in sys.argv[1:])
