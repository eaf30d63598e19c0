"""Question: how much faster are random training windows read from the Zarr store than decoded from
mp4 files (one per episode)?

Generates smooth moving shapes (not noise), writes them once as a Zarr store and once as mp4 files
(OpenCV, mp4v), then reads the same random 16-frame windows both ways in one process:
  zarr:            WindowDataset[i] (the training path: locate window, read chunks, decode Blosc/zstd)
  mp4 open+seek:   open the episode's file, seek to the window's first frame, decode 16 frames
  mp4 cached seek: captures kept open per episode (a generous baseline), seek + decode
  zarr lz4:        the same store with data/rgb recompressed as Blosc lz4 instead of the format's
                   zstd: what a faster codec would buy (a data point, not what StoreWriter writes)
Rounds alternate between methods and the median round is reported. Ratios are against mp4 open+seek.

    python bench/bench_windows.py [--episodes 20 --frames 100 --size 64 --window 16 --windows 300]
    python bench/bench_windows.py --from-store data/sim.zarr --frames 64   # real simulator frames
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import zarr
from zarr.codecs import BloscCodec

from genie_robot.data.store import Episode, EpisodeStore, StoreWriter, disk_size
from genie_robot.data.windows import WindowDataset


def synthetic_episode(rng: np.random.Generator, frames: int, size: int, noise: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8: a drifting colour gradient and three moving shapes (a rendered scene);
    noise > 0 adds uniform per-pixel noise in [-noise, noise] like a camera's sensor noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(40, 200, size=3)
    shapes = [
        (
            rng.uniform(0, size, 2),
            rng.uniform(-1.5, 1.5, 2),
            rng.integers(50, 255, 3),
            int(rng.integers(4, size // 5)),
        )
        for _ in range(3)
    ]
    out = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        phase = 0.05 * t
        img = np.stack([base[c] + 40 * np.sin(6 * xx + 4 * yy * (c + 1) + phase) for c in range(3)], axis=-1)
        img = img.clip(0, 255).astype(np.uint8)
        for k, (pos, vel, colour, radius) in enumerate(shapes):
            centre = tuple(int(v) for v in (pos + vel * t) % size)
            if k == 0:
                cv2.circle(img, centre, radius, colour.tolist(), -1, cv2.LINE_AA)
            else:
                cv2.rectangle(img, centre, (centre[0] + radius, centre[1] + radius), colour.tolist(), -1)
        if noise:
            img = (img.astype(np.int16) + rng.integers(-noise, noise + 1, size=img.shape)).clip(0, 255)
        out[t] = img
    return out


def write_mp4(frames: np.ndarray, path: Path, fps: float) -> None:
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write mp4v to {path}")
    for f in frames:
        writer.write(f[..., ::-1])
    writer.release()


def read_mp4_window(cap: cv2.VideoCapture, start: int, window: int) -> np.ndarray:
    cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    out = []
    for _ in range(window):
        ok, frame = cap.read()
        if not ok:
            raise RuntimeError(f"mp4 ended early reading frames {start}..{start + window}")
        out.append(frame[..., ::-1])
    return np.stack(out)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-10)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--windows", type=int, default=100, help="windows per round and method")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--chunk-frames", type=int, default=4)
    p.add_argument("--noise", type=int, default=0, help="per-pixel sensor noise amplitude (0: clean render)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--from-store",
        help="take the first --episodes episodes (first --frames frames each) of this store, e.g. "
        "simulator data, instead of synthetic frames",
    )
    args = p.parse_args()

    if args.from_store:
        src = EpisodeStore.open(args.from_store)
        episodes = [src.episode(e).rgb[: args.frames] for e in range(min(args.episodes, src.num_episodes))]
        args.size = src.resolution[0]
        print(f"frames from {args.from_store}: {len(episodes)} episodes x {len(episodes[0])} frames")
    else:
        rng = np.random.default_rng(args.seed)
        episodes = [synthetic_episode(rng, args.frames, args.size, args.noise) for _ in range(args.episodes)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store_path = str(tmp / "bench.zarr")
        with StoreWriter(
            store_path,
            resolution=(args.size, args.size),
            fps=10,
            source="bench",
            chunk_frames=args.chunk_frames,
        ) as w:
            for frames in episodes:
                w.add_episode(Episode(frames))
        # The same store with data/rgb as Blosc lz4 (written through zarr directly, same chunks).
        lz4_path = str(tmp / "bench_lz4.zarr")
        shutil.copytree(store_path, lz4_path)
        g = zarr.open_group(lz4_path, mode="r+")
        g.create_array(
            "data/rgb",
            data=np.concatenate(episodes),
            chunks=g["data/rgb"].chunks,
            compressors=BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
            overwrite=True,
        )
        mp4s = []
        for e, frames in enumerate(episodes):
            mp4s.append(tmp / f"ep{e:03d}.mp4")
            write_mp4(frames, mp4s[-1], fps=10)
        raw_mb = sum(f.nbytes for f in episodes) / 2**20
        zarr_mb = disk_size(store_path) / 2**20
        lz4_mb = disk_size(lz4_path) / 2**20
        mp4_mb = sum(f.stat().st_size for f in mp4s) / 2**20

        ds = WindowDataset(store_path, split="all", window=args.window, seed=args.seed)
        ds_lz4 = WindowDataset(lz4_path, split="all", window=args.window, seed=args.seed)
        caches: dict[int, cv2.VideoCapture] = {}

        def zarr_read(i: int) -> np.ndarray:
            return ds[i]["frames"].numpy()

        def zarr_lz4_read(i: int) -> np.ndarray:
            return ds_lz4[i]["frames"].numpy()

        def mp4_open_seek(i: int) -> np.ndarray:
            _, e, start = ds.locate(i)
            cap = cv2.VideoCapture(str(mp4s[e]))
            try:
                return read_mp4_window(cap, start, args.window)
            finally:
                cap.release()

        def mp4_cached_seek(i: int) -> np.ndarray:
            _, e, start = ds.locate(i)
            if e not in caches:
                caches[e] = cv2.VideoCapture(str(mp4s[e]))
            return read_mp4_window(caches[e], start, args.window)

        # Correctness first: zarr is exact; mp4 is lossy but must land on the right frames.
        for i in range(20):
            _, e, start = ds.locate(i)
            want = episodes[e][start : start + args.window]
            assert np.array_equal(zarr_read(i), want) and np.array_equal(zarr_lz4_read(i), want)
            got = mp4_open_seek(i)
            assert psnr(got, want) > 25, f"mp4 window {i} decodes at {psnr(got, want):.1f} dB"
            # The right frames, not a neighbour: closer to them than to the window shifted by one.
            if start + args.window < args.frames:
                assert psnr(got, want) > psnr(got, episodes[e][start + 1 : start + 1 + args.window]) + 1
            assert np.array_equal(mp4_cached_seek(i), got)
        mp4_psnr = statistics.mean(
            psnr(mp4_open_seek(i), episodes[ds.locate(i)[1]][ds.locate(i)[2] :][: args.window])
            for i in range(20)
        )

        methods = {
            "mp4 open+seek+decode": mp4_open_seek,
            "mp4 cached capture, seek+decode": mp4_cached_seek,
            "zarr WindowDataset": zarr_read,
            "zarr WindowDataset, lz4 instead of zstd": zarr_lz4_read,
        }
        # Many short rounds in rotating order, so load from other processes on a shared machine hits
        # every method alike; wall and CPU time (all threads, ffmpeg's included) are both reported.
        wall: dict[str, list[float]] = {m: [] for m in methods}
        cpu: dict[str, list[float]] = {m: [] for m in methods}
        names = list(methods)
        for r in range(args.rounds):
            indices = range(1000 + r * args.windows, 1000 + (r + 1) * args.windows)
            for name in names[r % len(names) :] + names[: r % len(names)]:
                fn = methods[name]
                w0, c0 = time.perf_counter(), time.process_time()
                for i in indices:
                    fn(i)
                wall[name].append(args.windows / (time.perf_counter() - w0))
                cpu[name].append((time.process_time() - c0) * 1000 / args.windows)
        for cap in caches.values():
            cap.release()

    base = statistics.median(wall["mp4 open+seek+decode"])
    base_cpu = statistics.median(cpu["mp4 open+seek+decode"])
    print(
        f"bench_windows: {args.episodes} episodes x {args.frames} frames at {args.size}x{args.size}, "
        f"window {args.window}, {args.windows} random windows x {args.rounds} rounds (median), "
        f"noise {args.noise}, zarr chunk {args.chunk_frames} frames, "
        f"{platform.machine()} Python {platform.python_version()}"
    )
    print(
        f"sizes: raw {raw_mb:.1f} MiB, zarr (blosc zstd) {zarr_mb:.1f} MiB, zarr lz4 {lz4_mb:.1f} MiB, "
        f"mp4 (mp4v) {mp4_mb:.1f} MiB; "
        f"mp4 PSNR vs source {mp4_psnr:.1f} dB (zarr is lossless)"
    )
    print(
        f"{'method':<42}{'windows/s':>10}{'ms/window':>11}{'CPU ms/window':>15}{'speed vs mp4 open+seek':>24}"
    )
    for name in methods:
        rate, c = statistics.median(wall[name]), statistics.median(cpu[name])
        speedup = f"{rate / base:.1f}x wall, {base_cpu / c:.1f}x CPU"
        print(f"{name:<42}{rate:>10.0f}{1000 / rate:>11.2f}{c:>15.2f}{speedup:>24}")


if __name__ == "__main__":
    main()
