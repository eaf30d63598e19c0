"""Experiment tracking: the one logging path of training, to MLflow 3.

By default runs go to a local store in the working directory -- `sqlite:///<cwd>/mlflow.db` with
artifacts under `<cwd>/mlruns/` (MLflow's own default name, git-ignored) -- so nothing needs a
server; `mlflow ui --backend-store-uri sqlite:///mlflow.db` shows them. `--tracking-uri
http://host:5000` sends them to a team server instead.

Each run gets the flattened config as params, per-step metrics (buffered, sent in batches), system
info as tags, and files as artifacts. Weights are logged as safetensors files, never as pickled
MLflow models. Only rank 0 tracks; other ranks get a `NullTracker`.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

PARAM_VALUE_MAX = 6000  # MLflow 3 limit on a param value


def default_tracking_uri() -> str:
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def artifact_root_for(tracking_uri: str) -> str | None:
    """Artifacts of a local sqlite store go to `mlruns/` beside the database; a server decides itself."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///"):]).resolve().parent / "mlruns").as_uri()
    return None


class Tracker:
    """One MLflow run. `run_id` given: continue that run (resume), else create a new one."""

    def __init__(
        self,
        *,
        experiment: str,
        run_name: str | None = None,
        tracking_uri: str | None = None,
        run_id: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self._pending: list = []
        if run_id is not None:
            run = self.client.get_run(run_id)  # raises if the run is gone from this tracking store
            self.run_id = run.info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            exp = self.client.get_experiment_by_name(experiment)
            if exp is not None:
                exp_id = exp.experiment_id
            else:
                exp_id = self.client.create_experiment(
                    experiment, artifact_location=artifact_root_for(self.tracking_uri)
                )
            run = self.client.create_run(exp_id, run_name=run_name, tags=tags or {})
            self.run_id = run.info.run_id
        self.experiment_id = run.info.experiment_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's batch limit for params
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, tags=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Buffered: call `flush()` to send (training flushes every `log_every` steps)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending.extend(Metric(k, float(v), now, step) for k, v in metrics.items())

    def flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:1000], self._pending[1000:]
            self.client.log_batch(self.run_id, metrics=batch)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status)


class NullTracker:
    """What ranks other than 0 get: the same interface, doing nothing."""

    run_id = None
    experiment_id = None

    def log_params(self, params): ...
    def set_tags(self, tags): ...
    def log_metrics(self, metrics, step): ...
    def flush(self): ...
    def log_artifact(self, path, artifact_path=None): ...
    def finish(self, status="FINISHED"): ...


def _param_str(value: Any) -> str:
    s = str(value)
    return s if len(s) <= PARAM_VALUE_MAX else s[: PARAM_VALUE_MAX - 3] + "..."


def git_commit(repo_dir: str | Path | None = None) -> str:
    """HEAD of the project checkout (with '-dirty' when tracked files changed), or 'unknown'."""
    cwd = Path(repo_dir) if repo_dir else Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=10,
        ).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def system_info(device, world_size: int = 1) -> dict[str, str]:
    """Tags describing where a run ran: versions, device, threads, allocator, git commit."""
    import torch

    info = {
        "sys.torch": torch.__version__,
        "sys.python": platform.python_version(),
        "sys.platform": platform.platform(),
        "sys.host": socket.gethostname(),
        "sys.device": str(device),
        "sys.threads": str(torch.get_num_threads()),
        "sys.cpu_count": str(os.cpu_count()),
        "sys.world_size": str(world_size),
        "sys.malloc": os.environ.get("GENIE_MALLOC_MODE", "default"),
        "sys.git_commit": git_commit(),
    }
    if device.type == "cuda":
        info["sys.cuda"] = str(torch.version.cuda)
        info["sys.gpu"] = torch.cuda.get_device_name(device)
    return info


def log_report_run(*, experiment: str, tracking_uri: str | None, run_name: str, params: dict, metrics: dict,
                   out: str | Path, artifact_dir: str, tags: dict[str, str] | None = None,
                   curves: dict[str, list] | None = None) -> str:
    """One finished MLflow run for a report folder (eval, plan-eval, agents): params, metrics at step 0,
    `curves` as per-step series (None entries skipped), every file of `out` under `artifact_dir`.
    Returns the run id; the run is marked FAILED if logging breaks half way."""
    tracker = Tracker(experiment=experiment, run_name=run_name, tracking_uri=tracking_uri,
                      tags={"stage": run_name, "sys.git_commit": git_commit(), **(tags or {})})
    try:
        tracker.log_params(params)
        tracker.log_metrics(metrics, step=0)
        for name, values in (curves or {}).items():
            for step, v in enumerate(values):
                if v is not None:
                    tracker.log_metrics({name: v}, step=step)
        for path in sorted(Path(out).iterdir()):
            if path.is_file():
                tracker.log_artifact(path, artifact_dir)
        tracker.finish()
    except BaseException:
        tracker.finish("FAILED")
        raise
    return tracker.run_id
