"""`genie-robot plan-eval`: the comparison itself on videos the model can reproduce (the planner
must end closer to the goal than random sequences), the held-out seed guard, and the command end to
end on simulator episodes: report folder, pictures, MLflow run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genie_robot.planning.evaluate import check_held_out, evaluate
from genie_robot.planning.scoring import pixel_distance


@pytest.fixture(scope="module")
def wm0(tiny_bundle):
    from genie_robot.runtime.world_model import WorldModel

    return WorldModel.load(tiny_bundle, backend="torch", temperature=0.0, order="confidence")


def test_planner_ends_closer_than_random_sequences(wm0, frame):
    # videos the model itself imagines from known actions: their later frames are reachable goals
    rng = np.random.default_rng(0)
    videos = [np.concatenate([frame[None], wm0.rollout(frame, rng.integers(0, 4, (1, 5)))[0]]) for _ in range(3)]
    res = evaluate(wm0, videos, horizon=3, samples=16, iterations=2, elites=4, random=8, eval_rollouts=2,
                   progress=False)
    s = res["summary"]
    assert s["planner"]["pixel_mse"][0] < s["random"]["pixel_mse"][0]
    assert s["planner_beats_random"][0] == 1.0
    for rec, pic, video in zip(res["episodes"], res["pictures"], videos):
        assert rec["goal"] == rec["start"] + 3
        np.testing.assert_array_equal(pic["goal"], video[rec["goal"]])
        assert rec["start/pixel_mse"] == pytest.approx(pixel_distance(video[rec["start"]][None], pic["goal"])[0])
        # argmax sampling: the fresh imagining of the chosen sequence is the one the search scored
        assert rec["planner/pixel_mse"] == pytest.approx(rec["search_score"])
        assert len(rec["lam_actions"]) == 3 and all(0 <= a < 4 for a in rec["lam_actions"])
    lo, hi = s["random"]["pixel_mse"][1:]
    assert lo <= s["random"]["pixel_mse"][0] <= hi


def test_bad_settings_are_named(wm0, frame):
    with pytest.raises(ValueError, match="need at least prompt_frames \\+ horizon"):
        evaluate(wm0, [np.stack([frame] * 3)], horizon=3, progress=False)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        evaluate(wm0, [np.stack([frame] * 20)], horizon=8, prompt_frames=4, progress=False)
    with pytest.raises(ValueError, match="overlap the training seeds 1000..1599; pick --seed 1600"):
        check_held_out(1590, 20)
    check_held_out(1600, 20)
    check_held_out(980, 20)


@pytest.mark.sim
def test_plan_eval_command_writes_report_pictures_and_mlflow(tiny_bundle, tmp_path, capsys):
    pytest.importorskip("mujoco")
    from mlflow.tracking import MlflowClient

    from genie_robot.cli import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "plan_eval"
    rc = main(["plan-eval", "--model", tiny_bundle, "--backend", "torch", "--out", str(out), "--episodes", "2",
               "--horizon", "2", "--samples", "8", "--iterations", "2", "--elites", "2", "--random", "4",
               "--eval-rollouts", "2", "--frames", "6", "--tracking-uri", uri])
    assert rc == 0
    for name in ("report.md", "metrics.json", "grid.png", "rollouts.png", "rollouts.gif"):
        assert (out / name).stat().st_size > 0, name
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["episodes"]) == 2 and m["params"]["seed"] == 5000
    report = (out / "report.md").read_text()
    assert "| planner |" in report and "LAM-inferred (true video)" in report
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("genie-robot").experiment_id])
    assert run.data.params["horizon"] == "2"
    assert "planner/pixel_mse" in run.data.metrics and "random/pixel_mse" in run.data.metrics
    assert {a.path for a in client.list_artifacts(run.info.run_id, "plan_eval")} >= {"plan_eval/report.md",
                                                                                       "plan_eval/grid.png"}
    assert main(["plan-eval", "--model", tiny_bundle, "--out", str(tmp_path / "x"), "--seed", "1000",
                 "--no-mlflow"]) == 2
    assert "overlap the training seeds" in capsys.readouterr().err


def test_plan_eval_reads_episodes_from_a_store(tiny_bundle, tiny_store, tmp_path):
    from genie_robot.cli import main

    store = tiny_store(episodes=3, length=8)
    out = tmp_path / "from_store"
    assert main(["plan-eval", "--model", tiny_bundle, "--backend", "torch", "--store", store, "--first-episode", "1",
                 "--episodes", "5", "--horizon", "2", "--samples", "4", "--iterations", "1", "--elites", "1",
                 "--random", "2", "--eval-rollouts", "1", "--out", str(out), "--no-mlflow"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["episodes"]) == 2  # episodes 1 and 2 of the 3
    assert main(["plan-eval", "--model", tiny_bundle, "--store", store, "--first-episode", "3",
                 "--out", str(tmp_path / "none"), "--no-mlflow"]) == 2
