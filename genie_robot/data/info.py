"""`genie-robot info STORE`: what an episode store holds (episodes, frames, resolution, fps, source,
camera, action/state dims, episode lengths, size on disk), optionally with a preview grid of frames,
and with `--check` whether every chunk is there and decompresses (opening reads only metadata,
episode_ends and the action/state vectors, so a damaged frame chunk shows only when read).

Imports nothing heavier than zarr, so it stays quick on a laptop looking at a remote store.
"""

from __future__ import annotations

import argparse
import sys

from genie_robot.errors import InputError


def describe(store) -> dict:
    """Summary of an EpisodeStore as plain JSON-able values."""
    import numpy as np

    from genie_robot.data.store import disk_size

    lengths = store.episode_lengths
    try:
        size = disk_size(store.path)
    except Exception:  # an object store without listing permission still gets the rest
        size = None
    stats = None
    if len(lengths):
        stats = {
            "min": int(lengths.min()),
            "mean": float(lengths.mean()),
            "median": float(np.median(lengths)),
            "max": int(lengths.max()),
        }
    instructions = [s for s in store.instructions if s]
    return {
        "path": store.path,
        "complete": store.complete,
        "episodes": store.num_episodes,
        "frames": store.num_frames,
        "resolution": list(store.resolution),
        "fps": store.fps,
        "source": store.source,
        "camera": store.camera,
        "action_dim": store.action_dim,
        "state_dim": store.state_dim,
        "episode_length": stats,
        "instructions": {"episodes_with": len(instructions), "distinct": len(set(instructions))},
        "schema_version": store.attrs.get("schema_version"),
        "disk_bytes": size,
    }


def _human_bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def format_info(d: dict) -> str:
    """The human-readable table `genie-robot info` prints."""
    h, w = d["resolution"]
    fps = d["fps"]
    duration = f" ({d['frames'] / fps / 60:.1f} min at {fps:g} fps)" if fps > 0 else ""
    stats = d["episode_length"]
    lengths = (
        f"min {stats['min']}, median {stats['median']:g}, mean {stats['mean']:.1f}, max {stats['max']} frames"
        if stats
        else "-"
    )
    rows = [
        ("store", d["path"] + ("" if d["complete"] else "  [INCOMPLETE: writer did not close cleanly]")),
        ("episodes", f"{d['episodes']}"),
        ("frames", f"{d['frames']}{duration}"),
        ("resolution", f"{h} x {w} (H x W)"),
        ("fps", f"{fps:g}"),
        ("source", d["source"]),
        ("camera", d["camera"]),
        ("action dim", "-" if d["action_dim"] is None else str(d["action_dim"])),
        ("state dim", "-" if d["state_dim"] is None else str(d["state_dim"])),
        ("episode length", lengths),
        (
            "instructions",
            f"{d['instructions']['episodes_with']} episodes, {d['instructions']['distinct']} distinct",
        ),
        ("disk size", _human_bytes(d["disk_bytes"])),
        ("schema", f"v{d['schema_version']}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def run(args: argparse.Namespace) -> int:
    """An invalid or damaged store (StoreError; a preview reads frames): one error line, exit 2."""
    from genie_robot.cli import run_reporting_errors

    return run_reporting_errors(_run, args, "genie-robot info")


def _run(args: argparse.Namespace) -> int:
    from genie_robot.data.store import EpisodeStore

    store = EpisodeStore.open(args.store, allow_incomplete=args.allow_incomplete)
    print(format_info(describe(store)))
    if args.check:
        counts, problems = store.check()
        read = ", ".join(f"{n} chunks of {name}" for name, n in counts.items())
        if problems:
            for message in problems:
                print(f"error: {message}", file=sys.stderr)
            print(f"check: {len(problems)} damaged or missing chunks ({read} read)", file=sys.stderr)
            return 2
        print(f"check: every chunk present and readable ({read})")
    if args.preview:
        from genie_robot.data.preview import save_image, store_preview

        if store.num_episodes == 0:
            raise InputError("the store has no episodes to preview")
        save_image(store_preview(store, episodes=args.episodes, frames=args.frames), args.preview)
        print(f"preview written to {args.preview}")
    return 0


def register_cli(subparsers) -> None:
    from genie_robot import cli_flags as flags

    p = subparsers.add_parser(
        "info",
        help="summarize an episode store (episodes, frames, resolution, fps, sizes); optional preview grid",
        description="Summarize a Zarr episode store. STORE is a local path or an fsspec URL (s3://, gs://).",
    )
    p.add_argument("store", metavar="STORE", help="store path or fsspec URL")
    p.add_argument(
        "--preview", metavar="OUT.png", help="write a grid of frames: rows = episodes, columns = time"
    )
    flags.add_episodes(p, 4, "episodes (rows) in the preview (default 4)")
    p.add_argument(
        "--frames", type=int, default=8, help="frames per episode (columns) in the preview (default 8)"
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="read every chunk of the frames, actions and states and report each missing or damaged one "
        "(reads the whole store)",
    )
    p.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="describe the committed episodes of a store whose writer did not close cleanly",
    )
    p.set_defaults(func=run)
