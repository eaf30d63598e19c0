"""README.md and the usage blocks of docs/*.md, run as written, so the docs cannot drift from the code.

tests/doc_blocks.py takes the fenced blocks apart. Each document runs in a scratch folder of its own,
laid out like the checkout (links to training/, scripts/, ... and ../shared), in document order, as a
reader following it would: `genie-robot` commands in this process (the console script is
`genie_robot.cli:main`), `source` applied to the environment, Python blocks exec'd one after the
other in one namespace. A command must exit 0 and leave the paths it names with --out, --preview
and --run-dir behind.

What keeps this to about a minute and a half (one ONNX export is half of it):
- TINY: long jobs get tiny sizes by flag. The doc's own words all go through (flags that do not exist
  fail), only the values below are replaced or added: 16x16 frames, one training step, few episodes.
  Training keeps each config's preset and only shrinks its frames (`model.tokenizer.resolution`), so
  a doc whose command does not fit its preset fails here as it would for the reader; a run from the
  shipped model keeps its 64x64 frames.
- STAND_INS: `--model default` is the shipped 64x64 model, whose first use exports its ONNX graphs
  for a minute; here it is a torch-backend bundle of the README's own tiny training run
  (tests/runtime/test_default_model.py covers `default` itself).
- NOT_RUN / ABSENT: commands that wait for a person or run until stopped, or read a data set this
  machine does not have, are parsed by the CLI (their flags must exist) and their paths checked.
- make_reader_inputs: what a doc assumes the reader brings (videos, an image folder, a rosbag) is
  made here, small; LINKS give a later doc what an earlier one made (docs/planning.md's `bundles/cpu` is
  the README's `models/sim`).
- GIVEN: the names a Python block leaves to the reader (`prompt_frames_THW3`), from real frames.
Blocks marked `<!-- test: skip REASON -->` are not run (set-up scripts, the suite itself, DDP on
several machines); their paths and `genie-robot` commands are still checked, by the fast test below.
docs/ros.md runs in tests/ros/test_ros_doc_examples.py, beside a real node.

A table entry that no doc uses any more is an error, so the tables shrink with the docs.
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import doc_blocks as db  # noqa: E402

ROOT = db.ROOT
DOCS = ["README.md", "docs/training.md", "docs/data_format.md", "docs/planning.md"]  # run here, in this order
ELSEWHERE = {"docs/ros.md": "tests/ros/test_ros_doc_examples.py"}

# Added to every `genie-robot train ...` (after the doc's own words, so these win).
TRAIN_TINY = ["--set", "max_steps=1", "--set", "batch_size=2", "--set", "val_batches=1", "--set", "window=4"]
# ... and 16x16 frames, except where the run starts from the shipped 64x64 model (--tokenizer/--init default).
TRAIN_FRAMES = ["--set", "model.tokenizer.resolution=[16,16]"]
# (subcommand words) -> {flag: tiny value}: replaced where the doc gives the flag, added where not.
TINY: dict[str, dict[str, str]] = {
    "simulate": {"--episodes": "4", "--frames": "12", "--resolution": "16", "--workers": "1"},
    "convert rlds": {"--max-episodes": "2", "--workers": "1"},
    "eval": {"--episodes": "2", "--frames": "4"},
    "rollout": {"--frames": "6"},
    "plan-eval": {"--episodes": "1", "--horizon": "2", "--samples": "4", "--elites": "2", "--iterations": "1",
                  "--random": "2", "--eval-rollouts": "1", "--frames": "6"},
    "agents": {"--labels": "3", "--seeds": "1", "--maps": "table", "--expert-episodes": "2", "--eval-episodes": "1",
               "--steps": "12", "--epochs": "1"},
}
STAND_INS = {"default": "the README's tiny run, exported without ONNX graphs (used with --backend torch)"}
BACKEND_FLAG = {"rollout", "plan-eval", "agents"}  # subcommands with --backend: a stand-in runs on torch
NOT_RUN = {
    "genie-robot play": "opens a window and waits for keys: tests/test_play.py drives it under Xvfb",
    "mlflow ui": "a web server that runs until stopped; the store it opens must exist",
}
ABSENT = {
    "/data/fractal20220817_data/0.1.0": "the RT-1 data set (~100 GB) is not on this machine: "
    "tests/data/convert/test_rlds.py converts RT-1 records of its schema",
}
LINKS = {
    "docs/data_format.md": {"episodes.zarr": ("README.md", "data/sim.zarr")},
    "docs/planning.md": {"bundles/cpu": ("README.md", "models/sim")},
}
OUT_FLAGS = ("--out", "-o", "--preview", "--run-dir")


def _frames(ctx) -> np.ndarray:
    from genie_robot.data.store import EpisodeStore

    store = EpisodeStore.open(str(ctx.workdir("README.md") / "data" / "sim.zarr"))
    return store.frames(*store.episode_bounds(0))  # (12, 16, 16, 3): a real simulated episode


GIVEN = {
    "prompt_frames_THW3": lambda ctx: _frames(ctx)[:2],
    "actions_B": lambda ctx: np.array([3]),
    "candidate_actions_BT": lambda ctx: np.array([[0, 1, 2], [7, 7, 7]]),
    "frame_HW3": lambda ctx: _frames(ctx)[0],
    "goal_HW3": lambda ctx: _frames(ctx)[6],
    "camera_frame_HW3": lambda ctx: _frames(ctx)[1],
}
_SHAPED = re.compile(r"_([BTHWCNMDVAS13hw]+)$")  # a name with a shape suffix (docs/architecture.md legend)


def _doc_blocks(doc: str) -> list[db.Block]:
    return db.read_blocks(ROOT / doc)


def _subcommand(argv: list[str], table) -> str | None:
    """The longest key of `table` that `genie-robot ...` starts with."""
    if argv[:1] != ["genie-robot"]:
        return None
    keys = [k for k in table if argv[1 : 1 + len(k.split())] == k.split()]
    return max(keys, key=len, default=None)


def _parse(argv: list[str]) -> str | None:
    """Parse a genie-robot command with the real parser: None, or why it does not parse."""
    from genie_robot.cli import build_parser

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            build_parser().parse_args(argv[1:])
        except SystemExit as exc:
            if exc.code:
                return err.getvalue().strip() or f"exit {exc.code}"
    return None


def _static_problems(cmd: db.Command) -> list[str]:
    """What is wrong with a command without running it: repository paths that do not exist, and a
    genie-robot command the CLI does not parse."""
    shared_here = (ROOT.parent / "shared").is_dir()  # a clone away from the project folder has no ../shared
    problems = [f"{cmd.where}: {p} does not exist in the repository" for p in db.repo_paths(cmd.program)
                if not (ROOT / p).exists() and (shared_here or not p.startswith("../shared/"))]
    argv = cmd.program
    if argv[0] in ("python", "torchrun") and "training.train" in argv:  # `-m training.train` = `genie-robot train`
        argv = ["genie-robot", "train", *argv[argv.index("training.train") + 1 :]]
    if argv[0] == "torchrun" and "genie-robot" in argv:  # torchrun ... --no-python genie-robot ...
        argv = argv[argv.index("genie-robot"):]
    if argv[:1] == ["genie-robot"] and (why := _parse(argv)):
        problems.append(f"{cmd.where}: `{cmd.text}` does not parse: {why}")
    return problems


# ------------------------------------------------------------------------------------------------
# the fast check: every block is run somewhere or says why not; paths exist; commands parse


def test_every_doc_block_is_run_or_says_why_not():
    problems, runnable_docs = [], set()
    for path in db.doc_files():
        for block in db.read_blocks(path):
            if not block.runnable:
                continue
            if block.skip is not None and not block.skip:
                problems.append(f"{block.where}: `<!-- test: skip -->` without a reason")
            if block.skip is None:
                runnable_docs.add(block.doc)
            if block.lang in db.SHELL:
                for cmd in db.shell_commands(block):
                    problems += _static_problems(cmd)
    for doc in sorted(runnable_docs - set(DOCS) - set(ELSEWHERE)):
        problems.append(f"{doc} has code blocks no test runs: add it to DOCS in {Path(__file__).name} "
                        "(or mark a block <!-- test: skip REASON -->)")
    problems += [f"{doc} is said to run in {f}, which does not exist" for doc, f in ELSEWHERE.items()
                 if not (ROOT / f).exists()]
    assert not problems, "\n".join(problems)


def test_the_extractor_reads_markers_continuations_and_optional_flags():
    """doc_blocks itself, on a document written here (the slow tests rely on it)."""
    text = (
        "intro\n<!-- test: skip needs a GPU -->\n```bash\ngenie-robot eval --dynamics r \\\n    --out x [--fvd]"
        "   # comment\n```\n<!-- test: env A=1 B=\"two words\" -->\n```python title\nx = 1\n```\n"
        "```\nnot code\n```\n```python outline\ndef f(): ...\n```\n```console\n$ genie-robot info s ...\nout\n```\n"
    )
    lines = text.splitlines()
    parsed = db.parse_blocks(lines, "doc.md")
    assert [(b.lang, b.line, b.skip, b.runnable) for b in parsed] == [
        ("bash", 3, "needs a GPU", True), ("python", 8, None, True), ("", 11, None, False),
        ("python", 14, None, False), ("console", 17, None, True)]
    assert parsed[1].env == {"A": "1", "B": "two words"} and parsed[1].info == "title"
    (cmd,) = db.shell_commands(parsed[0])
    assert cmd.argv == ["genie-robot", "eval", "--dynamics", "r", "--out", "x", "--fvd"] and cmd.line == 4
    (info,) = db.shell_commands(parsed[4])
    assert info.argv == ["genie-robot", "info", "s"] and info.line == 18
    assert db.split_words("GENIE_NUM_THREADS=1 genie-robot x") == ["GENIE_NUM_THREADS=1", "genie-robot", "x"]
    assert db.repo_paths(["./scripts/demo", "training/configs/nope.yaml", "data/sim.zarr", "clips/*.mp4",
                          "--config=training/x.yaml", "../shared/data/real/x"]) == [
        "scripts/demo", "training/configs/nope.yaml", "training/x.yaml", "../shared/data/real/x"]


# ------------------------------------------------------------------------------------------------
# the slow part: run the docs


class DocRunner:
    """Runs documents in scratch folders under `root`; remembers what each did (README.md first: the
    others use what it made)."""

    def __init__(self, root: Path):
        self.root = root
        (root / "shared").symlink_to(ROOT.parent / "shared")
        self.results: dict[str, list[str]] = {}  # doc -> problems ([] = ran clean)
        self.seconds: list[tuple[str, float]] = []
        self.used: set[str] = set()  # table entries used (stale ones fail the test)
        self._stand_in: Path | None = None

    def workdir(self, doc: str) -> Path:
        d = self.root / doc.replace("/", "_").removesuffix(".md")
        if not d.exists():
            d.mkdir()
            for entry in ROOT.iterdir():
                if not entry.name.startswith(".") and entry.name not in db.OUTPUTS:
                    (d / entry.name).symlink_to(entry)
        return d

    # -- one document

    def run(self, doc: str) -> list[str]:
        if doc in self.results:
            return self.results[doc]
        work = self.workdir(doc)
        for name, (src_doc, src) in LINKS.get(doc, {}).items():
            self.run(src_doc)
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).symlink_to(self.workdir(src_doc) / src)
            self.used.add(f"LINKS:{doc}:{name}")
        make_reader_inputs(work)
        env, cwd = dict(os.environ), os.getcwd()
        namespace: dict = {"__name__": "__doc__"}
        problems: list[str] = []
        os.chdir(work)
        try:
            for block in _doc_blocks(doc):
                if not block.runnable or block.skip is not None:
                    continue
                os.environ.update(block.env)
                problem = self.python(block, namespace) if block.lang == "python" else self.shell(block)
                if problem:
                    problems.append(problem)
                    break  # what follows builds on it
        finally:
            os.chdir(cwd)
            os.environ.clear()
            os.environ.update(env)
        self.results[doc] = problems
        return problems

    def shell(self, block: db.Block) -> str | None:
        for cmd in db.shell_commands(block):
            problem = self.command(cmd)
            if problem:
                return problem
        return None

    def command(self, cmd: db.Command) -> str | None:
        argv = cmd.program
        if argv[0] in ("source", "."):
            return self.source(cmd, argv[1])
        for prefix, reason in NOT_RUN.items():
            if cmd.text.startswith(prefix):
                self.used.add(f"NOT_RUN:{prefix}")
                return self.not_run(cmd)
        for path in ABSENT:
            if path in argv:
                self.used.add(f"ABSENT:{path}")
                return self.not_run(cmd)
        argv = self.tiny(argv)
        t0 = time.process_time()
        if argv[0] == "genie-robot":
            assert shutil.which("genie-robot"), "the genie-robot console script is not installed (pip install -e .)"
            saved = dict(os.environ)
            os.environ.update(cmd.env)  # `NAME=value genie-robot ...`
            try:
                rc, out = _in_process(argv[1:])
            finally:
                os.environ.clear()
                os.environ.update(saved)
        else:
            run = subprocess.run(argv, env={**os.environ, **cmd.env}, capture_output=True, text=True, timeout=300)
            rc, out = run.returncode, run.stdout + run.stderr
        self.seconds.append((f"{cmd.where} {' '.join(argv)[:100]}", time.process_time() - t0))
        if rc != 0:
            return f"{cmd.where}: `{cmd.text}` exited {rc}\n  ran as: {' '.join(argv)}\n{out[-4000:]}"
        for flag in OUT_FLAGS:
            if flag in argv and not Path(argv[argv.index(flag) + 1]).exists():
                return f"{cmd.where}: `{cmd.text}` exited 0 but wrote no {argv[argv.index(flag) + 1]}\n{out[-2000:]}"
        return None

    def not_run(self, cmd: db.Command) -> str | None:
        problems = _static_problems(cmd)
        for word in cmd.program:
            if word.startswith("sqlite:///") and not Path(word.removeprefix("sqlite:///")).exists():
                problems.append(f"{cmd.where}: {word}: no such database after the commands before it")
        return "\n".join(problems) or None

    def source(self, cmd: db.Command, path: str) -> str | None:
        if not Path(path).is_file():
            return f"{cmd.where}: cannot source {path}: no such file"
        run = subprocess.run(["bash", "-c", f'source "{path}" >/dev/null && env -0'], capture_output=True, timeout=60)
        if run.returncode:
            return f"{cmd.where}: `source {path}` failed: {run.stderr.decode()[-2000:]}"
        os.environ.update(dict(item.split("=", 1) for item in run.stdout.decode().split("\0") if "=" in item))
        return None

    def tiny(self, argv: list[str]) -> list[str]:
        argv = [w for word in argv for w in (sorted(glob.glob(word)) or [word] if "*" in word else [word])]  # as bash
        key = _subcommand(argv, TINY)
        if key:
            self.used.add(f"TINY:{key}")
            for flag, value in TINY[key].items():
                if flag in argv:
                    argv[argv.index(flag) + 1] = value
                else:
                    argv += [flag, value]
        if argv[:2] == ["genie-robot", "train"]:
            from_shipped = any(argv[i] in ("--tokenizer", "--init") and argv[i + 1] == "default"
                               for i in range(len(argv) - 1))
            argv += TRAIN_TINY if from_shipped else TRAIN_FRAMES + TRAIN_TINY
        if "--model" in argv and argv[argv.index("--model") + 1] in STAND_INS:
            self.used.add("STAND_INS:default")
            argv[argv.index("--model") + 1] = str(self.stand_in())
            if argv[1] in BACKEND_FLAG and "--backend" not in argv:
                argv += ["--backend", "torch"]
        return argv

    def stand_in(self) -> Path:
        if self._stand_in is None:
            out = self.root / "stand-in-default"
            run = self.workdir("README.md") / "runs" / "dynamics"
            rc, text = _in_process(["export", "--dynamics", str(run), "--out", str(out), "--no-onnx"])
            assert rc == 0, f"could not make the stand-in for --model default from {run}:\n{text[-3000:]}"
            self._stand_in = out
        return self._stand_in

    def python(self, block: db.Block, namespace: dict) -> str | None:
        for name, make in GIVEN.items():
            if re.search(rf"\b{name}\b", block.text):
                namespace.setdefault(name, make(self))
                self.used.add(f"GIVEN:{name}")
        before = set(namespace)
        t0 = time.process_time()
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                exec(compile(block.text, block.where, "exec"), namespace)  # noqa: S102 - the doc's own code
        except Exception:
            return f"{block.where}: the Python block fails:\n{block.text}\n{traceback.format_exc(limit=-6)}"
        finally:
            self.seconds.append((f"{block.where} python", time.process_time() - t0))
        wrong = []
        for name in set(namespace) - before:
            m, value = _SHAPED.search(name), namespace[name]
            if m and isinstance(value, np.ndarray):
                suffix = m.group(1)
                if value.ndim != len(suffix) or any(c == "3" and n != 3 for c, n in zip(suffix, value.shape)):
                    wrong.append(f"{name} has shape {value.shape}")
        if wrong:
            return f"{block.where}: names that do not match their shape suffix: {', '.join(wrong)}"
        return None


def _in_process(args: list[str]) -> tuple[int, str]:
    """`genie-robot ARGS` in this process: (exit status, what it printed)."""
    from genie_robot.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            rc = main(args)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
        except Exception:
            return 1, out.getvalue() + traceback.format_exc()
    return int(rc or 0), out.getvalue()


def make_reader_inputs(work: Path) -> None:
    """What the README's `convert` commands expect the reader to have, made small: two mp4 clips at
    different rates, a folder of PNG frames, and a rosbag2 with a camera topic."""
    import cv2

    rng = np.random.default_rng(0)
    if not (work / "clips").exists():
        (work / "clips").mkdir()
        for name, fps in (("a.mp4", 25.0), ("b.mp4", 10.0)):
            writer = cv2.VideoWriter(str(work / "clips" / name), cv2.VideoWriter_fourcc(*"mp4v"), fps, (40, 32))
            for _ in range(12):  # 12 frames: a 4-frame training window at stride 3 fits
                writer.write(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8))
            writer.release()
    if not (work / "frames_dir").exists():
        (work / "frames_dir").mkdir()
        for i in range(5):
            cv2.imwrite(str(work / "frames_dir" / f"{i:04d}.png"), rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    if not (work / "my_bag").exists():
        from rosbags.rosbag2 import Writer
        from rosbags.typesys import Stores, get_typestore

        ts = get_typestore(Stores.LATEST)
        Image, Header, Time = (ts.types[f"{p}/msg/{n}"] for p, n in
                               (("sensor_msgs", "Image"), ("std_msgs", "Header"), ("builtin_interfaces", "Time")))
        with Writer(work / "my_bag", version=9) as writer:
            conn = writer.add_connection("/camera/image_raw", Image.__msgtype__, typestore=ts)
            for i in range(8):
                t = 1_700_000_000 * 10**9 + i * 50_000_000  # 20 Hz
                msg = Image(header=Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id="camera"),
                            height=24, width=32, encoding="rgb8", is_bigendian=0, step=96,
                            data=rng.integers(0, 256, 24 * 96, dtype=np.uint8))
                writer.write(conn, t, ts.serialize_cdr(msg, msg.__msgtype__))


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    """The runner, with one torch thread (tiny models) and nothing written outside the scratch folder."""
    import torch

    if not (ROOT.parent / "shared" / "data" / "real").is_dir():  # a clone away from the project's folder
        pytest.skip(f"the README converts ../shared/data/real/ (the project's sample robot video), which is not "
                    f"beside this checkout: {ROOT.parent / 'shared'}")

    root = tmp_path_factory.mktemp("docs")
    saved = {k: os.environ.get(k) for k in ("GENIE_NUM_THREADS", "OMP_NUM_THREADS", "GENIE_ROBOT_CACHE")}
    os.environ.update(GENIE_NUM_THREADS="1", OMP_NUM_THREADS="1", GENIE_ROBOT_CACHE=str(root / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    runner = DocRunner(root)
    yield runner
    torch.set_num_threads(threads)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    print("\ncpu seconds per doc command:\n" + "\n".join(f"{s:7.1f}  {what}" for what, s in runner.seconds))


@pytest.mark.slow
@pytest.mark.sim
@pytest.mark.parametrize("doc", DOCS)
def test_doc_runs_as_written(docs, doc):
    problems = docs.run(doc)
    assert not problems, "\n\n".join(problems)


@pytest.mark.slow
@pytest.mark.sim
def test_every_table_entry_is_still_used(docs):
    """Run after the docs (same module, declared after them): an entry no doc needs any more is dead."""
    for doc in DOCS:
        docs.run(doc)
    entries = ({f"TINY:{k}" for k in TINY} | {f"NOT_RUN:{k}" for k in NOT_RUN} | {f"ABSENT:{k}" for k in ABSENT}
               | {f"STAND_INS:{k}" for k in STAND_INS} | {f"GIVEN:{k}" for k in GIVEN}
               | {f"LINKS:{d}:{n}" for d, links in LINKS.items() for n in links})
    assert entries <= docs.used, f"table entries no doc uses (remove them): {sorted(entries - docs.used)}"
