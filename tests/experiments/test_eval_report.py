"""`genie-robot eval` (experiments/eval_report.py) end to end: train the tiny preset a few steps on a
small store with ground-truth actions, evaluate, and read the report folder and the MLflow run back;
and the report of an evaluation whose NMI could not be computed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from genie_robot.cli import main as cli

EXPECTED_FILES = {"report.md", "metrics.json", "recon.png", "latent_actions.png", "latent_action_steps.png",
                  "rollouts.gif", "rollouts.png", "delta_psnr.png", "code_usage.png"}


def _store(path: Path, episodes: int = 6, frames: int = 12, res: int = 16) -> str:
    """Moving squares; the ground-truth action is the square's displacement (dx, dy, 0, gripper)."""
    from genie_robot.data.store import Episode, StoreWriter

    rng = np.random.default_rng(0)
    with StoreWriter(str(path), resolution=(res, res), fps=10.0, source="test", action_dim=4) as w:
        for _ in range(episodes):
            rgb = np.zeros((frames, res, res, 3), np.uint8)
            act = np.zeros((frames, 4), np.float32)
            y, x = rng.integers(2, res - 6, 2)
            for t in range(frames):
                rgb[t, y : y + 4, x : x + 4] = (255, 200, 50)
                dy, dx = rng.integers(-1, 2, 2)
                act[t] = (dx, dy, 0, rng.choice([-1, 1]))
                y, x = int(np.clip(y + dy, 0, res - 4)), int(np.clip(x + dx, 0, res - 4))
            w.add_episode(Episode(rgb=rgb, action=act))
    return str(path)


def test_the_report_says_why_nmi_is_missing(tmp_path):
    """Ground-truth actions all in one class (tests/eval/test_evaluate.py): the report says n/a and why."""
    import torch

    from experiments.eval_report import write_report
    from genie_robot.eval.evaluate import evaluate_model
    from genie_robot.models.configs import preset
    from genie_robot.models.genie import Genie

    torch.manual_seed(0)
    genie = Genie(preset("tiny")).eval().requires_grad_(False)
    T, (H, W) = genie.cfg.lam.context, genie.cfg.tokenizer.resolution
    clips = np.random.default_rng(0).integers(0, 256, (2, T, H, W, 3), dtype=np.uint8)
    still = [np.zeros((T, 4), np.float32) for _ in range(2)]  # every action "still": one class
    with torch.no_grad():
        ev = evaluate_model(genie, clips, episode_frames=list(clips), episode_actions=still, show=1, depth=1)
    write_report(ev, tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text())["latent/nmi_note"] == ev.metrics["latent/nmi_note"]
    md = (tmp_path / "report.md").read_text()
    assert "| NMI(latent action, discretised ground-truth action) | n/a |" in md and "one class (still)" in md
    assert {"recon.png", "rollouts.gif", "rollouts.png", "delta_psnr.png", "latent_actions.png",
            "latent_action_steps.png", "code_usage.png"} <= {p.name for p in tmp_path.iterdir()}


def test_the_report_reads_fsq_actions_with_levels_as_directions(tmp_path):
    """A conv LAM with FSQ (4, 4): 16 actions, also reported as 4 directions (usage, NMI, corner picture)."""
    import dataclasses

    import torch

    from experiments.eval_report import write_report
    from genie_robot.eval.evaluate import evaluate_model
    from genie_robot.models.configs import preset
    from genie_robot.models.genie import Genie

    torch.manual_seed(0)
    cfg = preset("tiny")
    cfg = dataclasses.replace(cfg, lam=dataclasses.replace(cfg.lam, kind="conv", fsq_levels=(4, 4)))
    genie = Genie(cfg).eval().requires_grad_(False)
    T, (H, W) = genie.cfg.lam.context, genie.cfg.tokenizer.resolution
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (2, T, H, W, 3), dtype=np.uint8)
    actions = [rng.normal(size=(T, 4)).astype(np.float32) for _ in range(2)]
    with torch.no_grad():
        ev = evaluate_model(genie, clips, episode_frames=list(clips), episode_actions=actions, show=2, depth=1)
    m = ev.metrics
    assert m["num_actions"] == 16 and ev.direction_codes == [0, 3, 12, 15]
    assert sum(m["latent/directions/usage"]) == pytest.approx(1.0) and len(m["latent/directions/usage"]) == 4
    assert m["latent/directions/min_usage"] == pytest.approx(min(m["latent/directions/usage"]))
    assert 0.0 <= m["latent/directions/nmi"] <= 1.0
    # the directions are a coarsening of the codes: their usage sums the codes' usage
    usage = np.asarray(m["latent/usage"]).reshape(2, 2, 2, 2)  # dim 0 (lower, upper half), level, dim 1 ...
    np.testing.assert_allclose(m["latent/directions/usage"], usage.sum((1, 3)).reshape(-1), atol=1e-12)
    write_report(ev, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "## The 16 latent actions as 4 directions" in md and "| 3 | ++ | 15 |" in md
    assert "latent_directions.png" in md
    # which way each direction's corner action moves the picture, from each clip's first frame
    assert m["latent/motion/actions"] == [0, 3, 12, 15] and m["latent/motion/starts"] == 2
    assert m["latent/motion/steps"] == 1 and sum(m["latent/motion/real_transitions"]) == 2 * (T - 1)
    assert all(c is None or 0.0 <= c <= 1.0 + 1e-9 for c in m["latent/motion/consistency"])
    assert "## Which way each direction moves the arm" in md
    assert md.count("\n| -+ | 3 |") == 1 and md.count("\n| ++ | 15 |") == 1  # a row per direction

    def strict(constant):
        raise AssertionError(f"metrics.json holds {constant}: not JSON")

    json.loads((tmp_path / "metrics.json").read_text(), parse_constant=strict)  # None where nothing was measured
    from PIL import Image

    s = -(-96 // H)  # eval_report enlarges frames to at least 96 px
    w, h = Image.open(tmp_path / "latent_directions.png").size
    assert h > 2 * H * s and w > 5 * W * s  # 2 start rows (and a header), start + 4 directions


def test_the_report_of_a_sign_code_lam_has_no_directions(tmp_path):
    """FSQ (2, 2, 2): every action already is a direction, so the report has no directions section;
    the motion table has a row per action."""
    import dataclasses

    import torch

    from experiments.eval_report import write_report
    from genie_robot.eval.evaluate import evaluate_model
    from genie_robot.models.configs import preset
    from genie_robot.models.genie import Genie

    cfg = preset("tiny")
    genie = Genie(dataclasses.replace(cfg, lam=dataclasses.replace(cfg.lam, kind="conv"))).eval()
    T, (H, W) = genie.cfg.lam.context, genie.cfg.tokenizer.resolution
    clips = np.random.default_rng(0).integers(0, 256, (1, T, H, W, 3), dtype=np.uint8)
    with torch.no_grad():
        ev = evaluate_model(genie, clips, show=1, depth=1)
    write_report(ev, tmp_path)
    assert ev.direction_codes is None and "latent/directions/usage" not in ev.metrics
    md = (tmp_path / "report.md").read_text()
    assert not (tmp_path / "latent_directions.png").exists() and "directions" not in md
    A = genie.cfg.dynamics.num_actions
    assert ev.metrics["latent/motion/actions"] == list(range(A)) and "## Which way each action moves the arm" in md
    assert "| action | consistency |" in md and all(f"\n| {a} | " in md for a in range(A))


def test_the_report_of_the_ground_truth_control_names_its_actions(tmp_path):
    """A model conditioned on the store's actions has no latent actions to count."""
    import dataclasses

    import torch

    from experiments.eval_report import write_report
    from genie_robot.eval.evaluate import evaluate_model
    from genie_robot.models.configs import preset
    from genie_robot.models.genie import Genie

    torch.manual_seed(0)
    cfg = preset("tiny")
    cfg = dataclasses.replace(cfg, dynamics=dataclasses.replace(cfg.dynamics, action_source="ground_truth", action_dim=4))
    genie = Genie(cfg).eval().requires_grad_(False)
    T, (H, W) = genie.cfg.lam.context, genie.cfg.tokenizer.resolution
    clips = np.random.default_rng(0).integers(0, 256, (2, T, H, W, 3), dtype=np.uint8)
    actions = [np.random.default_rng(1).normal(size=(T, 4)).astype(np.float32) for _ in range(2)]
    with torch.no_grad():
        ev = evaluate_model(genie, clips, episode_frames=list(clips), episode_actions=actions, show=1, depth=1,
                            clip_actions_BTm1=np.stack([a[1:] for a in actions]))
    write_report(ev, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "the store's true actions (the ground-truth-action control)." in md and "latent actions." not in md.splitlines()[2]
    # its rows say which actions they are, and it links no latent-action pictures it cannot have
    assert "| generation PSNR, true actions (dB, mean over t >= 1) |" in md and "| generation PSNR, shuffled actions (dB) |" in md
    assert "inferred" not in md and "perplexity" not in md and "## Latent actions" not in md
    linked = set(re.findall(r"\]\(([^)]+\.(?:png|gif))\)", md))
    assert linked and linked <= {p.name for p in tmp_path.iterdir()}, linked


def test_generation_psnr_over_several_sampling_seeds(tmp_path):
    """--seeds K: PSNR and ΔPSNR are the means of K rollouts per clip (seed, seed + 1, ...), each seed's
    reading is kept and shown, and the first seed is the one-seed evaluation exactly."""
    import torch

    from experiments.eval_report import write_report
    from genie_robot.eval.evaluate import evaluate_model
    from genie_robot.models.configs import preset
    from genie_robot.models.genie import Genie

    torch.manual_seed(0)
    genie = Genie(preset("tiny")).eval().requires_grad_(False)
    T, (H, W) = genie.cfg.lam.context, genie.cfg.tokenizer.resolution
    clips = np.random.default_rng(0).integers(0, 256, (2, T, H, W, 3), dtype=np.uint8)
    with torch.no_grad():
        one = {s: evaluate_model(genie, clips, seed=s, show=1, depth=1).metrics for s in (5, 6, 7)}
        ev = evaluate_model(genie, clips, seed=5, seeds=3, show=1, depth=1)
    m = ev.metrics
    assert "seeds" not in one[5] and "gen/psnr_inferred_by_seed" not in one[5]
    assert m["seeds"] == 3
    assert m["gen/psnr_inferred_by_seed"] == pytest.approx([one[s]["gen/psnr_inferred"] for s in (5, 6, 7)])
    assert len(set(m["gen/psnr_inferred_by_seed"])) > 1  # the seeds sample different rollouts
    assert m["delta_psnr/t4_by_seed"] == pytest.approx([one[s]["delta_psnr/t4"] for s in (5, 6, 7)])
    assert m["gen/psnr_inferred"] == pytest.approx(np.mean(m["gen/psnr_inferred_by_seed"]))
    assert m["delta_psnr/t4"] == pytest.approx(np.mean(m["delta_psnr/t4_by_seed"]))
    assert m["gen/psnr_random"] == pytest.approx(np.mean([one[s]["gen/psnr_random"] for s in (5, 6, 7)]))
    assert m["gen/ssim_inferred"] == pytest.approx(one[5]["gen/ssim_inferred"])  # the pictures: the first seed's
    write_report(ev, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "PSNR and ΔPSNR are means over 3 sampling seeds" in md
    by_seed = ", ".join(f"{v:.2f}" for v in m["gen/psnr_inferred_by_seed"])
    assert f"| {m['gen/psnr_inferred']:.2f} (by seed: {by_seed}) |" in md


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval_e2e")
    store = _store(d / "s.zarr")
    uri = f"sqlite:///{d}/mlflow.db"
    common = ["--store", store, "--preset", "tiny", "--tracking-uri", uri, "--set", "batch_size=2",
              "--set", "val_batches=1", "--set", "max_steps=2", "--set", "warmup_steps=1", "--set", "sample_every=0"]
    assert cli(["train", "tokenizer", *common, "--run-dir", str(d / "tok")]) == 0
    assert cli(["train", "dynamics", *common, "--run-dir", str(d / "dyn"), "--tokenizer", str(d / "tok")]) == 0
    return d, store, uri


@pytest.mark.slow
def test_eval_writes_report_and_logs_it(trained):
    from mlflow.tracking import MlflowClient

    d, store, uri = trained
    out = d / "report"
    assert cli(["eval", "--dynamics", str(d / "dyn"), "--tokenizer", str(d / "tok"), "--store", store,
                "--out", str(out), "--split", "all", "--episodes", "3", "--tracking-uri", uri]) == 0
    assert EXPECTED_FILES <= {p.name for p in out.iterdir()}
    m = json.loads((out / "metrics.json").read_text())
    for key in ("recon/psnr", "recon/ssim", "delta_psnr/t4", "gen/psnr_inferred", "gen/psnr_random",
                "latent/perplexity", "latent/nmi"):
        assert np.isfinite(m[key]), key
    assert m["clips"] == 3 and m["frames"] == 8 and len(m["delta_psnr/curve"]) == 8
    assert sum(m["latent/usage"]) == pytest.approx(1.0) and m["latent/transitions"] == 3 * 11
    assert 0.0 <= m["latent/nmi"] <= 1.0
    md = (out / "report.md").read_text()
    assert "Δ_4PSNR" in md and "rollouts.gif" in md and "NMI" in md

    client = MlflowClient(tracking_uri=uri)
    run = [r for r in client.search_runs([client.get_experiment_by_name("genie-robot").experiment_id])
           if r.data.tags.get("stage") == "eval"]
    assert len(run) == 1 and run[0].info.status == "FINISHED"
    rid = run[0].info.run_id
    assert {f"report/{n}" for n in EXPECTED_FILES} <= {a.path for a in client.list_artifacts(rid, "report")}
    assert run[0].data.metrics["delta_psnr/t4"] == pytest.approx(m["delta_psnr/t4"])
    assert len(client.get_metric_history(rid, "delta_psnr")) == 7  # t = 1..7


@pytest.mark.slow
def test_eval_errors_are_clear(trained, capsys):
    d, store, uri = trained
    assert cli(["eval", "--dynamics", str(d / "tok"), "--store", store, "--out", str(d / "x"),
                "--tracking-uri", uri]) == 2
    assert "'tokenizer' checkpoint" in capsys.readouterr().err
    assert cli(["eval", "--dynamics", str(d / "dyn"), "--store", store, "--out", str(d / "x"), "--frames", "40",
                "--tracking-uri", uri]) == 2
    assert "has the 40 frames a clip of 40 frames needs" in capsys.readouterr().err
    assert cli(["eval", "--dynamics", str(d / "dyn"), "--store", store, "--out", str(d / "x"), "--seeds", "0",
                "--tracking-uri", uri]) == 2
    assert "--seeds 0: average over at least 1 sampling seed" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_with_fvd(trained, monkeypatch):
    """The --fvd path, with a randomly initialised I3D at 32x32 standing in for the 224x224 network."""
    import torch

    from genie_robot.eval import fvd as fvd_mod
    from genie_robot.eval import i3d as i3d_mod

    torch.manual_seed(0)
    random_i3d = i3d_mod.InceptionI3d().eval().requires_grad_(False)
    features = fvd_mod.i3d_features
    monkeypatch.setattr(i3d_mod, "load_kinetics_i3d", lambda path=None, **kw: random_i3d)
    monkeypatch.setattr(fvd_mod, "i3d_features", lambda v, net, **kw: features(v, net, size=32))
    d, store, uri = trained
    out = d / "report_fvd"
    args = ["eval", "--dynamics", str(d / "dyn"), "--store", store, "--split", "all", "--episodes", "2",
            "--tracking-uri", uri, "--fvd"]
    assert cli([*args, "--out", str(out), "--frames", "10"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(m["fvd/inferred"]) and np.isfinite(m["fvd/random"]) and m["fvd/videos"] == 2
    assert "FVD, inferred actions (2 videos)" in (out / "report.md").read_text()
    assert cli([*args, "--out", str(d / "report_short")]) == 0  # 8 frames: too short for the I3D
    assert "FVD skipped: clips of 8 frames" in (d / "report_short" / "report.md").read_text()


RT1_NPZ = "/work/shared/data/real/rt1_fractal_sample.npz"


@pytest.mark.slow
def test_eval_of_a_bundle_with_out_of_domain_clips(trained, tmp_path):
    import os

    d, store, uri = trained
    bundle = tmp_path / "bundle"
    assert cli(["export", "--dynamics", str(d / "dyn"), "--out", str(bundle), "--no-onnx"]) == 0
    # a second source: a store at another resolution (resized on the way in)
    big = _store(tmp_path / "big.zarr", episodes=2, frames=8, res=40)
    ood = [big] + ([RT1_NPZ] if os.path.exists(RT1_NPZ) else [])
    out = tmp_path / "report"
    args = ["eval", "--model", str(bundle), "--store", store, "--out", str(out), "--split", "all", "--episodes", "2",
            "--frames", "6", "--seeds", "2", "--tracking-uri", uri]
    for p in ood:
        args += ["--ood", p]
    assert cli(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    names = [Path(p).stem for p in ood]
    assert sorted(m["ood"]) == sorted(names)
    for name in names:
        o = m["ood"][name]
        assert o["frames"] == 6 and 0 < o["recon/psnr"] < 100 and -1 <= o["recon/ssim"] <= 1
        assert (out / f"ood_{name}.png").is_file() and (out / f"ood_{name}.gif").is_file()
    assert m["ood"]["big"]["clips"] == 2
    assert m["seeds"] == 2 and len(m["gen/psnr_inferred_by_seed"]) == 2
    report = (out / "report.md").read_text()
    assert "## Out of domain" in report and "ood_big.png" in report


def test_eval_needs_exactly_one_model_source(trained, tmp_path, capsys):
    d, store, uri = trained
    assert cli(["eval", "--store", store, "--out", str(tmp_path / "x"), "--tracking-uri", uri]) == 2
    assert "--model" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    np.savez(bad, frames=np.zeros((3, 8, 8, 3), np.uint8))
    assert cli(["eval", "--dynamics", str(d / "dyn"), "--store", store, "--out", str(tmp_path / "x"),
                "--ood", str(bad), "--tracking-uri", uri]) == 2
    assert "no 'image' array" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_shows_its_stages_on_a_terminal_and_is_quiet_otherwise(trained, tmp_path, monkeypatch, capsys):
    """Progress per stage (FVD and --ood take tens of seconds each) when stderr is a terminal; nothing
    when it is a log file."""
    import io
    import sys

    d, store, uri = trained
    ood = tmp_path / "ood.npz"
    np.savez(ood, image=np.random.default_rng(0).integers(0, 256, (8, 24, 32, 3), dtype=np.uint8))
    args = ["eval", "--dynamics", str(d / "dyn"), "--tokenizer", str(d / "tok"), "--store", store,
            "--split", "all", "--episodes", "2", "--tracking-uri", f"sqlite:///{tmp_path}/m.db", "--ood", str(ood)]
    assert cli([*args, "--out", str(tmp_path / "quiet")]) == 0
    assert "stage" not in capsys.readouterr().err

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert cli([*args, "--out", str(tmp_path / "tty")]) == 0
    shown = term.getvalue()
    for stage in ("reconstruction", "rollouts", "latent actions", "action motion", "ood ood"):
        assert stage in shown, (stage, shown[-500:])
    assert "5/5" in shown  # no --fvd: five stages


def test_the_every_step_picture_shows_at_most_16_actions_the_most_used():
    """64 actions x every step made a 13 MB picture: past GRID_COLUMNS actions it keeps the most used."""
    from experiments.eval_report import GRID_COLUMNS, _step_actions

    assert _step_actions({}, 8) == list(range(8))
    usage = np.zeros(64)
    usage[[63, 5, 40]] = (0.5, 0.3, 0.2)
    shown = _step_actions({"latent/usage": usage.tolist()}, 64)
    assert len(shown) == GRID_COLUMNS == 16 and {5, 40, 63} <= set(shown) and shown == sorted(shown)
    assert _step_actions({}, 64) == list(range(16))  # no usage recorded: the first 16


def test_direction_pictures_carry_their_measured_move_as_an_arrow():
    from experiments.eval_report import _with_arrows

    frames = np.zeros((2, 16, 16, 3), np.uint8)
    out = _with_arrows(frames, np.array([[4.0, 0.0], [0.1, 0.0]]), 4)  # a move right; one under half a pixel
    assert out.shape == (2, 64, 64, 3)
    yellow = (out[..., 0] > 128) & (out[..., 1] > 128) & (out[..., 2] < 64)
    cols = np.flatnonzero(yellow[0].any(0))
    assert cols.min() >= 30 and cols.max() >= 44 and not yellow[1].any()  # from the centre, 4 px x 4 to the right
