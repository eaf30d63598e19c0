"""`genie-robot plan-eval` (experiments/plan_report.py) end to end: on simulator episodes (report
folder, pictures, MLflow run), on store episodes, and at the bundle's frame stride."""

from __future__ import annotations

import json

import pytest


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


def test_plan_eval_takes_the_stride_from_the_bundle(stride2_bundle, tiny_bundle, tiny_store, tmp_path):
    from genie_robot.cli import main

    store = tiny_store(episodes=2, length=13)
    common = ["--backend", "torch", "--store", store, "--episodes", "2", "--horizon", "2", "--samples", "4",
              "--iterations", "1", "--elites", "1", "--random", "2", "--eval-rollouts", "1", "--no-mlflow"]
    for model, extra, stride in ((stride2_bundle, [], 2), (stride2_bundle, ["--stride", "3"], 3),
                                 (tiny_bundle, [], 1)):
        out = tmp_path / f"s{stride}"
        assert main(["plan-eval", "--model", model, "--out", str(out), *common, *extra]) == 0
        m = json.loads((out / "metrics.json").read_text())
        assert m["params"]["stride"] == stride
        for rec in m["episodes"]:
            assert rec["goal_frame"] - rec["start_frame"] == 2 * stride
            assert rec["goal_frame"] <= 12  # inside the 13-frame episode
        assert f"source frames at stride {stride}" in (out / "report.md").read_text()
