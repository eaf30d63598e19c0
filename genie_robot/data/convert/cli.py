"""`genie-robot convert rlds|video|rosbag …`: the converters from the command line.

Heavy imports (cv2, zarr, rosbags) happen inside the handlers so that `genie-robot --help` stays fast.
"""

from __future__ import annotations

import argparse
import logging

from genie_robot.cli import run_reporting_errors


def _resolution(text: str) -> int | tuple[int, int]:
    """'64' -> 64, '96x128' -> (96, 128) (H x W); sizes must be positive."""
    try:
        if "x" in text.lower():
            h, w = text.lower().split("x")
            value: int | tuple[int, int] = (int(h), int(w))
        else:
            value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW (e.g. 64 or 96x128), got {text!r}") from None
    if min(value if isinstance(value, tuple) else (value,)) <= 0:
        raise argparse.ArgumentTypeError(f"sizes must be positive pixels, e.g. 64 or 96x128, got {text!r}")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--out", required=True, help="output store path (a new .zarr folder)")
    p.add_argument("--resolution", type=_resolution, default=64,
                   help="output size N (square) or HxW; frames are centre-cropped to that aspect, "
                   "then resized (default 64)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def register_cli(subparsers) -> None:
    convert = subparsers.add_parser(
        "convert", help="convert robot datasets (RLDS, videos, rosbag2) into an episode store",
        description="Convert robot datasets into the Zarr episode store.",
    )
    sub = convert.add_subparsers(dest="format", metavar="FORMAT", required=True)

    rlds = sub.add_parser("rlds", help="RLDS / TFDS TFRecord (RT-1, Bridge, Open X-Embodiment), no TensorFlow",
                          description="One tf.train.Example per episode; shards convert in parallel into OUT.parts/ "
                          "and merge into OUT. Re-running resumes, skipping converted shards.")
    rlds.add_argument("src", nargs="+", help="TFDS dataset or version folder, or TFRecord shard files")
    _common(rlds)
    rlds.add_argument("--preset", help="known schema: rt1 or bridge (default: picked from dataset_info.json's "
                      "name when it is a known one)")
    rlds.add_argument("--image-key", help="camera feature, e.g. steps/observation/image_0 "
                      "(default: the preset's, else the first image key in sorted order)")
    rlds.add_argument("--fps", type=float, help="control rate (default: the preset's; required without one)")
    rlds.add_argument("--split", default="train", help="TFDS split to read, or 'all' (default train)")
    rlds.add_argument("--workers", type=int, default=1, help="shards converted in parallel (processes)")
    rlds.add_argument("--max-episodes", type=int, help="stop after this many episodes (shards then run in order)")
    rlds.add_argument("--keep-parts", action="store_true", help="keep OUT.parts/ after merging")
    rlds.set_defaults(func=_run_rlds)

    video = sub.add_parser("video", help="video files (mp4/avi/gif) or folders of PNG/JPEG frames, one episode each")
    video.add_argument("paths", nargs="+", help="video files and/or image folders")
    _common(video)
    video.add_argument("--fps", type=float, help="resample every episode to this rate (nearest earlier frame)")
    video.add_argument("--source-fps", type=float,
                       help="frame rate the image folders were taken at (default --fps); needed for folders "
                       "without --fps. Videos keep their own rate (this only stands in for a missing one)")
    video.set_defaults(func=_run_video)

    bag = sub.add_parser("rosbag", help="a camera topic of rosbag2 bags (sqlite3 / mcap), one episode per bag")
    bag.add_argument("bags", nargs="+", help="bag folders")
    _common(bag)
    bag.add_argument("--topic", required=True, help="sensor_msgs/msg/Image or CompressedImage topic")
    bag.add_argument("--fps", type=float, required=True, help="output rate; nearest earlier frame at each tick")
    bag.set_defaults(func=_run_rosbag)


def _setup_logging(args) -> None:
    from genie_robot.cli import setup_logging

    setup_logging(logging.WARNING if args.quiet else logging.INFO)


def _finish(report) -> int:
    print(f"{report.out}: {report.episodes} episodes, {report.frames} frames in {report.seconds:.1f}s")
    return 0


def _run(convert, args) -> int:
    """ConversionError, StoreError (e.g. NaN actions in the source), an existing OUT: one error line, exit 2."""
    _setup_logging(args)
    return run_reporting_errors(lambda _: _finish(convert()), args, "genie-robot convert")


def _run_rlds(args) -> int:
    from genie_robot.data.convert.rlds import convert_rlds

    src = args.src[0] if len(args.src) == 1 else args.src
    return _run(lambda: convert_rlds(
        src, args.out, preset=args.preset, image_key=args.image_key, resolution=args.resolution,
        fps=args.fps, split=None if args.split == "all" else args.split, workers=args.workers,
        max_episodes=args.max_episodes, overwrite=args.overwrite, keep_parts=args.keep_parts,
        progress=not args.quiet,
    ), args)


def _run_video(args) -> int:
    from genie_robot.data.convert.video import convert_videos

    return _run(lambda: convert_videos(
        args.paths, args.out, resolution=args.resolution, fps=args.fps, source_fps=args.source_fps,
        overwrite=args.overwrite, progress=not args.quiet,
    ), args)


def _run_rosbag(args) -> int:
    from genie_robot.data.convert.rosbag import convert_rosbag

    return _run(lambda: convert_rosbag(
        args.bags, args.out, topic=args.topic, fps=args.fps, resolution=args.resolution,
        overwrite=args.overwrite, progress=not args.quiet,
    ), args)
