"""`genie-robot ablate` (experiments/ablate.py) on the tiny sweep config: every kind of variant trains,
shares tokenizers where it should, is evaluated (tokenizer PSNR, ΔPSNR, real-I3D FVD), logged as one
MLflow run per variant, resumes without redoing finished work, and writes the report and plots."""

from pathlib import Path

import pytest

from genie_robot.cli import main
from experiments import ablate

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "experiments" / "configs" / "ablations" / "tiny.yaml")


def _summary_runs(tracking_uri, experiment):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


@pytest.mark.slow  # ~30 s: 3 tokenizers, a conv LAM, 6 stage-2 runs of 3 steps, 6 evaluations with I3D
def test_sweep_runs_resumes_and_reports(tiny_store, tmp_path, capsys):
    store = tiny_store(episodes=6, length=12, action_dim=4)
    out, docs = tmp_path / "abl", tmp_path / "docs" / "ablations.md"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["ablate", "--config", TINY, "--store", store, "--out", str(out), "--docs", str(docs), "--tracking-uri", uri]
    assert main(args) == 0

    sweep = ablate.load_sweep(TINY)
    results = ablate.load_results(out, sweep)
    assert sorted(results) == sorted(v.name for v in sweep.variants)
    # the tokenizer is trained once per distinct tokenizer config: ST-ViViT (shared by 3 variants), ViT, C-ViViT
    assert len(list((out / "tokenizers").iterdir())) == 3
    assert len({r["tokenizer_dir"] for r in results.values()}) == 3
    assert results["lam_tokens"]["tokenizer_dir"] == results["st_pixels"]["tokenizer_dir"] == results["dyn_w16"]["tokenizer_dir"]
    assert {n: (r["tokenizer_attention"], r["lam_input"]) for n, r in results.items()} == {
        "st_pixels": ("st", "pixels"), "vit": ("spatial", "pixels"), "cvivit": ("full", "pixels"),
        "lam_tokens": ("st", "tokens"), "dyn_w16": ("st", "pixels"), "conv_lam": ("st", "pixels")}
    # the conv LAM trains on its own first (once), then stage 2 trains only the dynamics on it, frozen
    assert len(list((out / "lams").iterdir())) == 1 and results["conv_lam"]["lam_dir"] == str(next((out / "lams").iterdir()))
    assert {n: r["lam_kind"] for n, r in results.items()}["conv_lam"] == "conv"
    conv = results["conv_lam"]
    assert "val/mse" in conv["lam"]["metrics"] and "val/lam/mse" not in conv["dynamics"]["metrics"]
    assert ablate.lam_metric(conv, "mse") == conv["lam"]["metrics"]["val/mse"]
    assert ablate.lam_metric(results["st_pixels"], "mse") == results["st_pixels"]["dynamics"]["metrics"]["val/lam/mse"]
    assert all(r["lam"] is None for n, r in results.items() if n != "conv_lam")
    assert results["dyn_w16"]["params"]["dynamics"] < results["st_pixels"]["params"]["dynamics"]
    for r in results.values():
        e = r["eval"]
        assert e["clips"] == 2 and e["frames"] == 9
        assert 0 < e["tokenizer_psnr"] < 100 and abs(e["dpsnr"]) < 50
        assert e["fvd"] is not None and e["fvd"] > 0, e.get("fvd_note")  # the real I3D is installed in CI
        assert r["dynamics"]["metrics"]["frames_per_s"] > 0 and "val/dynamics/loss" in r["dynamics"]["metrics"]
        assert r["budget"]["dynamics_steps"] == 3 and r["budget"]["seed"] == 0
        assert 0.0 <= e["nmi"] <= 1.0  # the store's 4-dim actions, discretised

    runs = _summary_runs(uri, sweep.experiment)
    assert sorted(run.data.tags["variant"] for run in runs) == sorted(results)
    for run in runs:
        assert {"fvd", "dpsnr", "tokenizer_psnr", "dynamics_params"} <= set(run.data.metrics)

    text = docs.read_text()
    assert "| ViT | " in text and "| 114.5 | 1.39 | 0.3 |" in text  # the paper's Table 3 next to ours
    assert "| 136.4 | 2.07 |" in text and "| 257.8 | 1.65 |" in text  # Table 2
    assert "| 81.4 | 1.66 | 0.9 |" in text  # the baseline row of Table 3 carries Table 3's numbers
    assert "agrees with the paper" in text and "Not run yet" not in text
    assert "| conv FSQ LAM | " in text and "- LAM kind: the conv FSQ LAM" in text and "1 conv LAM," in text
    for name in ("lam", "tokenizer", "scaling"):
        assert (docs.parent / "images" / f"ablations_{name}.png").stat().st_size > 1000

    # without --resume, a folder with results is refused, naming the flag
    capsys.readouterr()
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err
    # --resume: nothing is redone; a variant whose result was lost is re-evaluated without retraining
    stamps = {n: (out / "variants" / n / "result.json").stat().st_mtime_ns for n in results}
    (out / "variants" / "vit" / "result.json").unlink()
    ckpts = sorted(p.name for p in (out / "variants" / "vit" / "dynamics" / "checkpoints").iterdir())
    assert main(args + ["--resume"]) == 0
    assert "st_pixels: done, skipped" in capsys.readouterr().out
    again = ablate.load_results(out, sweep)
    assert again["vit"]["eval"]["fvd"] == pytest.approx(results["vit"]["eval"]["fvd"], rel=1e-6)
    assert sorted(p.name for p in (out / "variants" / "vit" / "dynamics" / "checkpoints").iterdir()) == ckpts
    for n in results:
        if n != "vit":
            assert (out / "variants" / n / "result.json").stat().st_mtime_ns == stamps[n]
    assert len(_summary_runs(uri, sweep.experiment)) == len(results)  # the vit run was reused, not duplicated


def test_isolated_stage_reports_its_own_peak_memory(tiny_store, tmp_path):
    """isolate: the stage trains in a child process; its peak RSS is measured there."""
    store = tiny_store(episodes=4, length=8)
    sweep = ablate.load_sweep(TINY)
    cfg = ablate.stage_config(sweep, sweep.variants[1], "tokenizer", stores=[store], run_dir=tmp_path / "tok",
                              tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    cfg.max_steps = 2
    res = ablate.run_stage(cfg, resume=False, isolate=True)
    assert res["peak_rss_mb"] > 50 and res["peak_rss_mb"] >= res["start_rss_mb"]
    assert Path(res["final"]).name == "step_00000002" and res["metrics"]["frames_per_s"] > 0
    assert ablate.run_stage(cfg, resume=False, isolate=True) == res  # finished: read back, not retrained


def test_tokenizer_key_is_shared_only_by_variants_that_keep_the_tokenizer(tmp_path):
    sweep = ablate.load_sweep(TINY)
    keys = {v.name: ablate.stage_key(ablate.stage_config(sweep, v, "tokenizer", stores=["s"], run_dir=tmp_path,
                                                             tracking_uri="sqlite:///x.db"))
            for v in sweep.variants}
    assert keys["st_pixels"] == keys["lam_tokens"] == keys["dyn_w16"]
    assert len({keys["st_pixels"], keys["vit"], keys["cvivit"]}) == 3


def test_report_only_without_results_and_config_errors(tmp_path, capsys):
    docs = tmp_path / "d" / "ablations.md"
    assert main(["ablate", "--config", TINY, "--out", str(tmp_path / "none"), "--report-only", "--docs", str(docs)]) == 0
    text = docs.read_text()
    assert "Not run yet: st_pixels, vit, cvivit, lam_tokens, dyn_w16, conv_lam" in text and "| n/a |" in text
    bad = tmp_path / "bad.yaml"
    bad.write_text("variants: [{name: a, paper: [table9]}]\n")
    assert main(["ablate", "--config", str(bad), "--out", str(tmp_path / "o"), "--store", "x"]) == 2
    assert "paper keys" in capsys.readouterr().err
    bad.write_text("preset: tiny\nvariants: [{name: a, model: {lam: {kind: conv}}}]\n")  # no lam_steps
    assert main(["ablate", "--config", str(bad), "--out", str(tmp_path / "o"), "--store", "x"]) == 2
    assert "variants a have a conv LAM" in capsys.readouterr().err
    bad.write_text("variantz: []\n")
    assert main(["ablate", "--config", str(bad), "--out", str(tmp_path / "o"), "--store", "x"]) == 2
    assert "unknown keys" in capsys.readouterr().err
