"""The Zarr episode store: robot episodes on disk (or object storage), written once, read for training.

Layout (diffusion_policy's ReplayBuffer convention, Zarr format 3; the contract is docs/data_format.md):
`data/rgb` (N, H, W, 3) uint8 with all episodes concatenated along time, optional `data/action`
(N, A) and `data/state` (N, S) float32, `meta/episode_ends` (E,) int64 cumulative, optional
`meta/instruction` (E,) strings. `StoreWriter` appends episodes so that a killed writer never leaves a
store that looks complete; `EpisodeStore` opens one read-only and validates it.

Zarr reads a chunk that is not there as its fill value (zeros: black frames), and by default does not
store a chunk that equals it. StoreWriter stores every chunk and marks the store so
(`ALL_CHUNKS_ATTR`); readers of a marked store treat a missing chunk as damage, like a chunk that does
not decompress, and raise a StoreError naming the array, the frames and the episode.
"""

from __future__ import annotations

import os
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numcodecs import blosc
from zarr.codecs import BloscCodec, BytesCodec
from zarr.storage import LocalStore

from genie_robot.errors import InputError

SCHEMA = "genie-robot/episodes"
SCHEMA_VERSION = 1
# Per-frame vectors are tiny; long chunks keep a window's actions in one read.
VECTOR_CHUNK_FRAMES = 1024
META_CHUNK_EPISODES = 4096
# Root attribute: every chunk of data/* was stored, even one equal to the fill value, so a missing
# chunk file is damage (a store without it may lack all-zero chunks legitimately: zarr's default).
ALL_CHUNKS_ATTR = "all_chunks_written"
# Rows of data/action and data/state checked for NaN / inf per read on open.
_FINITE_CHECK_ROWS = 1 << 16


class StoreError(InputError):
    """A store or an episode is not what the format promises. The message names the fix."""


@dataclass
class Episode:
    rgb: np.ndarray  # (T, H, W, 3) uint8
    action: np.ndarray | None = None  # (T, A) float32, ground truth, evaluation only
    state: np.ndarray | None = None  # (T, S) float32
    instruction: str | None = None

    def __len__(self) -> int:
        return len(self.rgb)


def _compressor(clevel: int = 3) -> BloscCodec:
    # Blosc zstd at a low level: lossless, and decoding stays cheap next to video decoding, though it
    # is most of what reading a training window costs (bench/bench_windows.py, bench/RESULTS.md).
    return BloscCodec(cname="zstd", clevel=clevel, shuffle="shuffle")


def _layout(shape: tuple[int, ...]) -> str:
    """Names the likely layout of a frame array for error messages: (T, H, W, 3), (T, 3, H, W), ..."""
    if len(shape) == 4 and shape[-1] in (1, 3, 4):
        return f"(T, H, W, {shape[-1]})"
    if len(shape) == 4 and shape[1] in (1, 3, 4):
        return f"(T, {shape[1]}, H, W)"
    if len(shape) == 3 and shape[-1] in (1, 3, 4):
        return f"(H, W, {shape[-1]}), a single frame"
    return str(tuple(shape))


def _check_frames(rgb: Any, resolution: tuple[int, int] | None, what: str) -> np.ndarray:
    if not isinstance(rgb, np.ndarray):
        raise StoreError(
            f"{what}: expected a numpy array of uint8 frames (T, H, W, 3), got {type(rgb).__name__}"
        )
    ok_layout = rgb.ndim == 4 and rgb.shape[-1] == 3
    if rgb.dtype != np.uint8 or not ok_layout:
        fix = []
        if rgb.dtype != np.uint8:
            fix.append("convert to uint8 in [0, 255]")
        if not ok_layout:
            fix.append("put channels last as RGB (T, H, W, 3)")
        raise StoreError(
            f"{what}: expected uint8 frames (T, H, W, 3), got {rgb.dtype} {_layout(rgb.shape)} "
            f"with shape {tuple(rgb.shape)}; {' and '.join(fix)}"
        )
    if len(rgb) == 0:
        raise StoreError(f"{what}: empty episode (0 frames); skip it instead of adding it")
    if resolution is not None and tuple(rgb.shape[1:3]) != tuple(resolution):
        raise StoreError(
            f"{what}: frames are {rgb.shape[1]}x{rgb.shape[2]} (H x W) but the store holds "
            f"{resolution[0]}x{resolution[1]}; resize frames to the store's resolution "
            f"(e.g. cv2.resize) or write a separate store"
        )
    return rgb


def _check_vector(x: Any, name: str, dim: int | None, num_frames: int, what: str) -> np.ndarray | None:
    """Validates an (T, D) action/state array against the store's dimension; returns float32."""
    if dim is None:
        if x is not None:
            raise StoreError(
                f"{what}: the episode has {name} but the store was created without {name}s; "
                f"pass {name}_dim={np.shape(x)[-1] if np.ndim(x) else '?'} when creating the store"
            )
        return None
    if x is None:
        raise StoreError(
            f"{what}: the store holds {name}s ({name}_dim={dim}) but the episode has none; "
            f"give every episode a ({num_frames}, {dim}) {name} array or create the store without {name}_dim"
        )
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise StoreError(f"{what}: expected float32 {name} (T, {dim}), got {x.dtype}")
    if x.ndim != 2 or x.shape[1] != dim:
        raise StoreError(f"{what}: expected {name} of shape (T, {dim}), got {tuple(x.shape)}")
    if len(x) != num_frames:
        raise StoreError(
            f"{what}: {name} has {len(x)} steps but the episode has {num_frames} frames; "
            f"give one {name} per frame (pad or drop the last {name} so the counts match)"
        )
    x = x.astype(np.float32, copy=False)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        t = int(np.argmax(bad))
        raise StoreError(
            f"{what}: {name} holds non-finite values (NaN or inf) at {int(bad.sum())} steps, the first at "
            f"step {t} ({x[t].tolist()}); fix or drop those steps in the source before writing"
        )
    return x


def _open_group(path: str, mode: str, storage_options: dict | None) -> zarr.Group:
    kwargs: dict[str, Any] = {"mode": mode, "zarr_format": 3}
    if storage_options:
        kwargs["storage_options"] = storage_options
    return zarr.open_group(str(path), **kwargs)


def _committed_prefix(ends: np.ndarray, limits: list[int], max_episodes: int) -> int:
    """Number of leading episodes whose `episode_ends` are valid: positive, strictly increasing and
    within every data array. A killed writer can leave a tail of fill values (0) or frames that no
    episode_ends entry covers yet; neither is counted."""
    ends = ends[:max_episodes]
    ok = (ends > np.concatenate([[0], ends[:-1]])) & (ends <= min(limits))
    return int(len(ends) if ok.all() else np.argmin(ok))


class _TimeReader:
    """Reads [start, stop) along time from an array chunked as whole frames.

    zarr 3's general read path spends ~1-2 ms per call handing work to its event-loop thread, more
    than decoding a whole 16-frame window. For the layout StoreWriter writes on a local disk
    (regular chunks of whole frames, bytes + Blosc, '/' chunk keys) this reads and decompresses the
    chunk files directly, into the output where a chunk lies inside the window. Anything else
    (object stores, other codecs, sharding) goes through zarr. bench/bench_windows.py measures it.

    A chunk that does not decompress (overwritten, truncated) raises StoreError naming the chunk, its
    frames and episodes; so does a missing chunk when `all_chunks` (the store's ALL_CHUNKS_ATTR):
    without it zarr's reading of a missing chunk as the fill value is kept. `where(lo, hi)` names
    the episodes of frames [lo, hi) for those messages.
    """

    def __init__(self, arr: zarr.Array, label: str, *, all_chunks: bool = False,
                 where: Callable[[int, int], str] = lambda lo, hi: ""):
        self.arr = arr
        self.label = label  # e.g. "data.zarr: data/rgb"
        self.all_chunks = all_chunks
        self.where = where
        self.root: Path | None = None
        meta = arr.metadata
        codecs = list(getattr(meta, "codecs", ()))
        chunks = tuple(getattr(meta.chunk_grid, "chunk_shape", ()))
        # Chunks of whole frames: chunk k holds frames [k * chunk, (k + 1) * chunk). 0 otherwise.
        self.chunk = chunks[0] if chunks and chunks[1:] == tuple(arr.shape[1:]) else 0
        if (
            isinstance(arr.store, LocalStore)
            and type(meta.chunk_grid).__name__ == "RegularChunkGrid"
            and self.chunk
            and len(codecs) == 2
            and isinstance(codecs[0], BytesCodec)
            and isinstance(codecs[1], BloscCodec)
            and (
                arr.dtype.itemsize == 1 or sys.byteorder == getattr(codecs[0].endian, "value", sys.byteorder)
            )
            and meta.chunk_key_encoding.encode_chunk_key((7,) + (0,) * (arr.ndim - 1))
            == "c/7" + "/0" * (arr.ndim - 1)
        ):
            self.root = Path(arr.store.root) / arr.path
            self.frame_shape = tuple(arr.shape[1:])
            self._key = f"{self.root}/c/{{}}{'/0' * (arr.ndim - 1)}"
            self._nbytes = int(np.prod(chunks)) * arr.dtype.itemsize
            # Blosc output is at most its input plus a small header: one read gets the whole file.
            self._bufsize = self._nbytes + 65536

    def read(self, start: int, stop: int, stride: int = 1) -> np.ndarray:
        if self.root is None or stop <= start:
            return self._read_zarr(start, stop, stride)
        out = np.empty((stop - start, *self.frame_shape), dtype=self.arr.dtype)
        c = self.chunk
        for k in range(start // c, (stop - 1) // c + 1):
            lo, hi = max(start, k * c), min(stop, (k + 1) * c)
            try:
                raw = self._read_file(self._key.format(k))
            except FileNotFoundError:  # never written: zarr's fill value, unless every chunk was
                if self.all_chunks:
                    raise self._chunk_error(k, "is missing") from None
                out[lo - start : hi - start] = self.arr.fill_value
                continue
            try:
                # Blosc trusts its header: a cut-off chunk would decompress past its end. The
                # 16-byte header holds the decoded size at byte 4 and the compressed one at 12.
                if len(raw) < 16:
                    raise ValueError(f"{len(raw)} bytes, shorter than a Blosc header")
                nbytes, _, cbytes = struct.unpack_from("<III", raw, 4)
                if cbytes != len(raw) or nbytes != self._nbytes:
                    raise ValueError(f"{len(raw)} bytes, the chunk's header says {cbytes} (of {nbytes} decoded)")
                if hi - lo == c:
                    blosc.decompress(raw, out[lo - start : hi - start])
                else:
                    whole = np.frombuffer(blosc.decompress(raw), dtype=self.arr.dtype).reshape(
                        c, *self.frame_shape
                    )
                    out[lo - start : hi - start] = whole[lo - k * c : hi - k * c]
            except (RuntimeError, ValueError) as exc:  # numcodecs: "error during blosc decompression"
                raise self._chunk_error(k, f"is damaged and cannot be decompressed ({exc})") from None
        return out if stride == 1 else np.ascontiguousarray(out[::stride])

    def _read_zarr(self, start: int, stop: int, stride: int) -> np.ndarray:
        try:
            out = np.asarray(self.arr[start:stop:stride])
        except (RuntimeError, ValueError) as exc:  # a codec failing on a damaged chunk
            raise StoreError(
                f"{self.label}: frames {start}-{stop - 1} ({self.where(start, stop)}) cannot be read: "
                f"{type(exc).__name__}: {exc}; the store is damaged: restore it from a copy or rewrite it"
            ) from None
        if self.all_chunks and self.chunk and stop > start:
            # A chunk whose frames all read as the fill value may be missing: ask the store (rarely needed).
            ks = np.arange(start, stop, stride) // self.chunk
            fill = np.asarray(out == self.arr.fill_value).reshape(len(out), -1).all(axis=1)
            for k in np.unique(ks[fill]):
                if fill[ks == k].all() and not self._chunk_exists(int(k)):
                    raise self._chunk_error(int(k), "is missing")
        return out

    def _chunk_exists(self, k: int) -> bool:
        from zarr.core.sync import sync

        key = self.arr.metadata.encode_chunk_key((k,) + (0,) * (self.arr.ndim - 1))
        return bool(sync(self.arr.store.exists(f"{self.arr.path}/{key}" if self.arr.path else key)))

    def _chunk_error(self, k: int, problem: str) -> StoreError:
        c = self.chunk
        lo, hi = k * c, min((k + 1) * c, self.arr.shape[0])
        key = self.arr.metadata.encode_chunk_key((k,) + (0,) * (self.arr.ndim - 1))
        return StoreError(
            f"{self.label}: chunk {key} (frames {lo}-{hi - 1}, {self.where(lo, hi)}) {problem}; the store "
            f"is damaged: restore it from a copy or rewrite it (`genie-robot info --check` finds every "
            f"damaged chunk)"
        )

    def _read_file(self, path: str) -> bytes:
        # os.read skips pathlib and buffered-IO layers: ~15 us a chunk, a tenth of a window's read.
        fd = os.open(path, os.O_RDONLY)
        try:
            parts = [os.read(fd, self._bufsize)]
            while parts[-1]:
                parts.append(os.read(fd, self._bufsize))
        finally:
            os.close(fd)
        return parts[0] if len(parts) == 2 else b"".join(parts)


class StoreWriter:
    """Appends episodes to a store; use as a context manager.

    The store's `complete` attribute is false while a writer has it open and becomes true only on a
    clean `close()` (leaving the `with` block through an exception does not close cleanly). Each
    episode is committed by appending to `meta/episode_ends` after its frames, actions, states and
    instruction are fully written, so a killed writer loses at most the episode in flight.
    mode: "w-" new store (error if one exists), "w" overwrite, "a" append (creates if missing; an
    incomplete store is first cut back to its committed episodes).
    """

    def __init__(
        self,
        path: str,
        *,
        resolution: tuple[int, int],
        fps: float,
        source: str,
        camera: str = "rgb",
        action_dim: int | None = None,
        state_dim: int | None = None,
        mode: str = "w-",
        chunk_frames: int = 4,
        storage_options: dict | None = None,
    ):
        if mode not in ("w-", "w", "a"):
            raise StoreError(f"mode must be 'w-' (new), 'w' (overwrite) or 'a' (append), got {mode!r}")
        if len(resolution) != 2 or min(resolution) <= 0:
            raise StoreError(f"resolution must be (H, W) with positive sizes, got {resolution!r}")
        self.path = str(path)
        self.resolution = (int(resolution[0]), int(resolution[1]))
        self.action_dim = action_dim
        self.state_dim = state_dim
        self._closed = False

        exists = _exists(self.path, storage_options)
        if not exists and _has_other_content(self.path, storage_options):
            raise StoreError(
                f"{self.path} exists but is not a Zarr store; refusing to write over it: choose a new path "
                f"or remove it first"
            )
        if mode == "w-" and exists:
            raise StoreError(
                f"{self.path} already exists; use mode='a' to append to it or mode='w' to overwrite it"
            )
        if mode == "a" and exists:
            self._group = _open_group(self.path, "r+", storage_options)
            self._check_compatible(fps=fps, source=source, camera=camera)
            self._truncate_to_committed()
        else:
            self._group = _open_group(self.path, "w", storage_options)
            self._create(fps, source, camera, chunk_frames)
        self._group.attrs["complete"] = False
        self._ends = np.asarray(self._group["meta/episode_ends"][:], dtype=np.int64)

    # -- creation and reopening ------------------------------------------------------------------

    def _create(self, fps: float, source: str, camera: str, chunk_frames: int) -> None:
        g = self._group
        h, w = self.resolution
        g.attrs.update(
            {
                "schema": SCHEMA,
                "schema_version": SCHEMA_VERSION,
                "complete": False,
                "fps": float(fps),
                "source": str(source),
                "camera": str(camera),
                "resolution": [h, w],
                ALL_CHUNKS_ATTR: True,
            }
        )
        g.create_array(
            "data/rgb",
            shape=(0, h, w, 3),
            chunks=(int(chunk_frames), h, w, 3),
            dtype="uint8",
            compressors=_compressor(),
        )
        for name, dim in (("action", self.action_dim), ("state", self.state_dim)):
            if dim is not None:
                g.create_array(
                    f"data/{name}",
                    shape=(0, int(dim)),
                    chunks=(VECTOR_CHUNK_FRAMES, int(dim)),
                    dtype="float32",
                    compressors=_compressor(),
                )
        g.create_array(
            "meta/episode_ends",
            shape=(0,),
            chunks=(META_CHUNK_EPISODES,),
            dtype="int64",
            fill_value=0,
            compressors=_compressor(),
        )
        g.create_array("meta/instruction", shape=(0,), chunks=(META_CHUNK_EPISODES,), dtype=str)

    def _check_compatible(self, **given: Any) -> None:
        attrs = dict(self._group.attrs)
        if attrs.get("schema") != SCHEMA:
            raise StoreError(
                f"{self.path} is not a genie-robot episode store (no schema={SCHEMA!r} attribute)"
            )
        stored = {
            "resolution": tuple(attrs["resolution"]),
            "fps": float(attrs["fps"]),
            "source": attrs["source"],
            "camera": attrs["camera"],
            "action_dim": self._group["data/action"].shape[1] if "data/action" in self._group else None,
            "state_dim": self._group["data/state"].shape[1] if "data/state" in self._group else None,
        }
        given = dict(given, resolution=self.resolution, action_dim=self.action_dim, state_dim=self.state_dim)
        given["fps"] = float(given["fps"])
        for key, value in given.items():
            if stored[key] != value:
                raise StoreError(
                    f"cannot append to {self.path}: it has {key}={stored[key]!r} but the writer was given "
                    f"{key}={value!r}; pass the store's {key} or write a separate store"
                )

    def _truncate_to_committed(self) -> None:
        """Cuts every array back to the committed episodes, dropping what a killed writer left half-done."""
        g = self._group
        ends = np.asarray(g["meta/episode_ends"][:], dtype=np.int64)
        data = [g[f"data/{k}"] for k in ("rgb", "action", "state") if f"data/{k}" in g]
        e = _committed_prefix(ends, [a.shape[0] for a in data], g["meta/instruction"].shape[0])
        n = int(ends[e - 1]) if e else 0
        for arr in data:
            if arr.shape[0] != n:
                arr.resize((n, *arr.shape[1:]))
        for name in ("meta/instruction", "meta/episode_ends"):
            if g[name].shape[0] != e:
                g[name].resize((e,))

    # -- writing ---------------------------------------------------------------------------------

    @staticmethod
    def _write_at(arr: zarr.Array, n: int, values: np.ndarray) -> None:
        """Makes rows [n, n + len(values)) of arr exactly `values`, dropping rows after them: rows a
        failed add_episode left behind are overwritten, never shifted into the next episode.
        Every chunk is stored, also one equal to the fill value (all-black frames, zero actions), so
        that readers can tell a missing chunk from such data (ALL_CHUNKS_ATTR)."""
        arr.resize((n + len(values), *arr.shape[1:]))
        arr.with_config({"write_empty_chunks": True})[n:] = values

    def add_episode(self, episode: Episode) -> None:
        """Validates and appends one episode; it is committed (visible to readers) when this returns."""
        if self._closed:
            raise StoreError(f"writer for {self.path} is closed; open a new StoreWriter(mode='a') to append")
        what = f"episode {len(self._ends)}"
        rgb = _check_frames(episode.rgb, self.resolution, what)
        action = _check_vector(episode.action, "action", self.action_dim, len(rgb), what)
        state = _check_vector(episode.state, "state", self.state_dim, len(rgb), what)
        if episode.instruction is not None and not isinstance(episode.instruction, str):
            raise StoreError(
                f"{what}: instruction must be a str or None, got {type(episode.instruction).__name__}"
            )

        g = self._group
        e = len(self._ends)
        n = int(self._ends[-1]) if e else 0
        # Order matters: data first, episode_ends last. Readers trust only episode_ends.
        self._write_at(g["meta/instruction"], e, np.array([episode.instruction or ""], dtype=object))
        self._write_at(g["data/rgb"], n, rgb)
        if action is not None:
            self._write_at(g["data/action"], n, action)
        if state is not None:
            self._write_at(g["data/state"], n, state)
        self._write_at(g["meta/episode_ends"], e, np.array([n + len(rgb)], dtype=np.int64))
        self._ends = np.append(self._ends, n + len(rgb))

    def close(self) -> None:
        """Marks the store complete. Idempotent."""
        if not self._closed:
            self._group.attrs["complete"] = True
            self._closed = True

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # An exception means the job did not finish: leave the store marked incomplete so nobody
        # trains on a silently truncated dataset. Its committed episodes stay readable.
        if exc_type is None:
            self.close()


def _exists(path: str, storage_options: dict | None) -> bool:
    try:
        _open_group(path, "r", storage_options)
        return True
    except (zarr.errors.GroupNotFoundError, FileNotFoundError):
        return False


def _has_other_content(path: str, storage_options: dict | None) -> bool:
    """True when something that is not a Zarr group lives at path (a file, a non-empty folder):
    creating a store there would delete it."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(str(path), **(storage_options or {}))
    if not fs.exists(root):
        return False
    return fs.isfile(root) or bool(fs.ls(root, detail=False))


class EpisodeStore:
    """A store opened read-only and validated. Use `EpisodeStore.open(path)`.

    rgb/action/state are lazy zarr arrays; with `allow_incomplete=True` they may be longer than
    `num_frames` (frames of an uncommitted episode), so index them through `episode_bounds`.
    """

    rgb: zarr.Array  # (N, H, W, 3) uint8
    action: zarr.Array | None  # (N, A) float32
    state: zarr.Array | None  # (N, S) float32
    episode_ends: np.ndarray  # (E,) int64
    num_episodes: int
    num_frames: int
    resolution: tuple[int, int]
    fps: float
    source: str
    camera: str
    complete: bool

    def __init__(self, group: zarr.Group, path: str, *, allow_incomplete: bool = False):
        self.path = path
        self._group = group
        self._validate(allow_incomplete)

    @classmethod
    def open(
        cls, path: str, *, allow_incomplete: bool = False, storage_options: dict | None = None
    ) -> EpisodeStore:
        """Opens a store read-only: a local path or an fsspec URL (memory://, s3://, gs://, ...)."""
        path = str(path)
        try:
            group = _open_group(path, "r", storage_options)
        except (zarr.errors.GroupNotFoundError, FileNotFoundError):
            raise StoreError(
                f"no episode store at {path} (expected a Zarr group with data/rgb and meta/episode_ends); "
                "check the path, or write one (StoreWriter, `genie-robot convert`, `genie-robot simulate`)"
            ) from None
        except (ValueError, KeyError, TypeError) as exc:  # json.JSONDecodeError, zarr's metadata errors
            raise _metadata_error(f"{path}/zarr.json", exc) from None
        return cls(group, path, allow_incomplete=allow_incomplete)

    def _array(self, name: str, required: bool) -> zarr.Array | None:
        try:
            present = name in self._group
            arr = self._group[name] if present else None
        except (ValueError, KeyError, TypeError) as exc:
            raise _metadata_error(f"{self.path}/{name}/zarr.json", exc) from None

        if not present:
            if required:
                raise StoreError(
                    f"{self.path}: missing array {name}; a genie-robot store needs data/rgb and "
                    f"meta/episode_ends (see docs/data_format.md), so rewrite it with StoreWriter"
                )
            return None
        if not isinstance(arr, zarr.Array):
            raise StoreError(f"{self.path}: {name} is a group, expected an array (see docs/data_format.md)")
        return arr

    def _validate(self, allow_incomplete: bool) -> None:
        g, p = self._group, self.path
        attrs = dict(g.attrs)
        version = attrs.get("schema_version")
        if version is None:
            raise StoreError(
                f"{p}: no schema_version attribute, so this is not a genie-robot episode store; "
                f"convert it with `genie-robot convert` or write it with StoreWriter"
            )
        if int(version) > SCHEMA_VERSION:
            raise StoreError(
                f"{p}: schema_version {version} is newer than this genie-robot reads ({SCHEMA_VERSION}); "
                f"upgrade genie-robot"
            )
        missing = [k for k in ("fps", "source", "camera", "resolution") if k not in attrs]
        if missing:
            raise StoreError(f"{p}: missing attributes {missing}; rewrite the store with StoreWriter")

        rgb = self._array("data/rgb", required=True)
        if rgb.dtype != np.uint8 or rgb.ndim != 4 or rgb.shape[-1] != 3:
            raise StoreError(
                f"{p}: expected uint8 frames (N, H, W, 3) in data/rgb, got {rgb.dtype} {_layout(rgb.shape)} "
                f"with shape {rgb.shape}; rewrite the store with StoreWriter, which converts nothing silently"
            )
        self.resolution = (int(attrs["resolution"][0]), int(attrs["resolution"][1]))
        if tuple(rgb.shape[1:3]) != self.resolution:
            raise StoreError(
                f"{p}: data/rgb frames are {rgb.shape[1]}x{rgb.shape[2]} but the resolution attribute says "
                f"{self.resolution[0]}x{self.resolution[1]}; fix the attribute or rewrite the store"
            )
        vectors = {}
        for name in ("action", "state"):
            arr = self._array(f"data/{name}", required=False)
            if arr is not None and (arr.dtype != np.float32 or arr.ndim != 2):
                raise StoreError(
                    f"{p}: expected float32 data/{name} (N, D), got {arr.dtype} with shape {arr.shape}; "
                    f"rewrite the store with StoreWriter"
                )
            vectors[name] = arr
        ends_arr = self._array("meta/episode_ends", required=True)
        if ends_arr.dtype != np.int64 or ends_arr.ndim != 1:
            raise StoreError(
                f"{p}: expected int64 meta/episode_ends (E,), got {ends_arr.dtype} {ends_arr.shape}"
            )
        instr = self._array("meta/instruction", required=False)

        try:
            ends = np.asarray(ends_arr[:], dtype=np.int64)
        except (RuntimeError, ValueError) as exc:  # a damaged chunk
            raise StoreError(
                f"{p}: meta/episode_ends cannot be read ({type(exc).__name__}: {exc}); the store is damaged: "
                "restore it from a copy or rewrite it"
            ) from None
        data = [rgb] + [a for a in vectors.values() if a is not None]
        limits = [a.shape[0] for a in data]
        max_e = instr.shape[0] if instr is not None else len(ends)
        committed = _committed_prefix(ends, limits, max_e)
        self.complete = bool(attrs.get("complete", False))
        if not self.complete and not allow_incomplete:
            raise StoreError(
                f"{p} is incomplete: its writer has not closed it cleanly (killed, failed or still writing); "
                f"it holds {committed} committed episodes. Read those with allow_incomplete=True "
                f"(`genie-robot info --allow-incomplete`), or finish the store: rerun the job that wrote it "
                f"(`genie-robot simulate --resume`, `genie-robot convert rlds` resumes by itself), or append "
                f"with StoreWriter(path, mode='a', ...) and close()"
            )
        if self.complete:
            n = int(ends[-1]) if len(ends) else 0
            if (
                committed != len(ends)
                or any(x != n for x in limits)
                or (instr is not None and max_e != len(ends))
            ):
                names = ["data/rgb"] + [f"data/{k}" for k, a in vectors.items() if a is not None]
                raise StoreError(
                    f"{p}: inconsistent episode_ends: it must be strictly increasing and end at the length "
                    f"of every data array, but episode_ends[-3:]={ends[-3:].tolist()} and lengths "
                    f"{dict(zip(names, limits, strict=True))}"
                    + (f", meta/instruction {max_e}" if instr is not None else "")
                    + "; the store is corrupt, so rewrite it"
                )

        self.episode_ends = ends[:committed]
        self.num_episodes = committed
        self.num_frames = int(self.episode_ends[-1]) if committed else 0
        self.rgb = rgb
        self.action = vectors["action"]
        self.state = vectors["state"]
        all_chunks = bool(attrs.get(ALL_CHUNKS_ATTR, False))
        self._readers = {
            k: _TimeReader(a, f"{p}: data/{k}", all_chunks=all_chunks, where=self._episodes_of)
            for k, a in (("rgb", rgb), *vectors.items())
            if a is not None
        }
        for name in ("action", "state"):
            if vectors[name] is not None:
                self._check_finite(name)
        self._instruction = instr
        self._instructions: list[str | None] | None = None
        self.fps = float(attrs["fps"])
        self.source = str(attrs["source"])
        self.camera = str(attrs["camera"])
        self.attrs = attrs

    def _episodes_of(self, lo: int, hi: int) -> str:
        """Names the episodes of frames [lo, hi) for error messages: "episode 3", "episodes 3-4"."""
        if lo >= self.num_frames:
            return "after the last committed episode"
        first = int(np.searchsorted(self.episode_ends, lo, side="right"))
        last = int(np.searchsorted(self.episode_ends, min(hi, self.num_frames) - 1, side="right"))
        return f"episode {first}" if first == last else f"episodes {first}-{last}"

    def _check_finite(self, name: str) -> None:
        """Refuses NaN / inf in data/action or data/state: metrics computed from them (NMI over
        discretised actions) would look meaningful. Reads the whole array: vectors are small next to
        the frames (RT-1's 13-dim actions are 0.4 % of the bytes of its 64x64 frames)."""
        for lo in range(0, self.num_frames, _FINITE_CHECK_ROWS):
            hi = min(lo + _FINITE_CHECK_ROWS, self.num_frames)
            bad = ~np.isfinite(self.read(name, lo, hi)).all(axis=1)
            if bad.any():
                t = lo + int(np.argmax(bad))
                e = int(np.searchsorted(self.episode_ends, t, side="right"))
                start = self.episode_bounds(e)[0]
                raise StoreError(
                    f"{self.path}: data/{name} holds non-finite values (NaN or inf), the first at frame {t} "
                    f"(episode {e}, step {t - start}); the data it was converted from is broken there: fix or "
                    f"drop those episodes and rewrite the store"
                )

    # -- reading ---------------------------------------------------------------------------------

    @property
    def action_dim(self) -> int | None:
        return None if self.action is None else int(self.action.shape[1])

    @property
    def state_dim(self) -> int | None:
        return None if self.state is None else int(self.state.shape[1])

    @property
    def episode_lengths(self) -> np.ndarray:
        """(E,) int64 frames per episode."""
        return np.diff(self.episode_ends, prepend=0)

    @property
    def instructions(self) -> list[str | None]:
        """Language instruction per episode (None where the source has none)."""
        if self._instructions is None:
            if self._instruction is None:
                self._instructions = [None] * self.num_episodes
            else:
                raw = self._instruction[: self.num_episodes] if self.num_episodes else []
                self._instructions = [str(s) or None for s in raw]
        return self._instructions

    def __len__(self) -> int:
        return self.num_episodes

    def episode_bounds(self, i: int) -> tuple[int, int]:
        """[start, end) frame indices of episode i (negative i counts from the end)."""
        if not -self.num_episodes <= i < self.num_episodes:
            raise IndexError(f"episode {i} out of range: {self.path} has {self.num_episodes} episodes")
        i %= self.num_episodes
        start = int(self.episode_ends[i - 1]) if i > 0 else 0
        return start, int(self.episode_ends[i])

    def episode(self, i: int) -> Episode:
        """Reads episode i fully into memory."""
        start, end = self.episode_bounds(i)
        return Episode(
            rgb=self.read("rgb", start, end),
            action=None if self.action is None else self.read("action", start, end),
            state=None if self.state is None else self.read("state", start, end),
            instruction=self.instructions[i % self.num_episodes],
        )

    def frames(self, start: int, stop: int, stride: int = 1) -> np.ndarray:
        """(T, H, W, 3) uint8 frames start, start+stride, ... < stop (global frame indices)."""
        return self.read("rgb", start, stop, stride)

    def read(self, name: str, start: int, stop: int, stride: int = 1) -> np.ndarray:
        """Rows start, start+stride, ... < stop of "rgb" (T, H, W, 3), "action" (T, A) or "state" (T, S)."""
        if name not in self._readers:
            raise KeyError(f"{self.path} has no data/{name}; it holds {sorted(self._readers)}")
        if not 0 <= start <= stop <= self.num_frames or stride < 1:
            raise IndexError(
                f"{name} [{start}:{stop}:{stride}] out of range: {self.path} has {self.num_frames} frames"
            )
        return self._readers[name].read(start, stop, stride)

    def check(self) -> tuple[dict[str, int], list[str]]:
        """Reads every chunk of every data array over the committed frames: ({"data/rgb": chunks
        read, ...}, [one message per missing or damaged chunk]). What `genie-robot info --check` runs."""
        counts, problems = {}, []
        for name, reader in self._readers.items():
            step = reader.chunk or 1024
            counts[f"data/{name}"] = 0
            for lo in range(0, self.num_frames, step):
                counts[f"data/{name}"] += 1
                try:
                    reader.read(lo, min(lo + step, self.num_frames))
                except StoreError as exc:
                    problems.append(str(exc))
        return counts, problems

    def __repr__(self) -> str:
        h, w = self.resolution
        return (
            f"EpisodeStore({self.path!r}, episodes={self.num_episodes}, frames={self.num_frames}, "
            f"{h}x{w}, fps={self.fps:g}, source={self.source!r}, complete={self.complete})"
        )


def _metadata_error(where: str, exc: Exception) -> StoreError:
    return StoreError(
        f"{where}: the store's Zarr metadata cannot be read ({type(exc).__name__}: {exc}); the file is "
        f"damaged: restore the store from a copy or rewrite it"
    )


def disk_size(path: str, storage_options: dict | None = None) -> int:
    """Bytes the store occupies (sum of object sizes); works for local paths and fsspec URLs."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(str(path), **(storage_options or {}))
    return int(fs.du(root, total=True))


__all__ = ["Episode", "EpisodeStore", "StoreError", "StoreWriter", "SCHEMA_VERSION", "disk_size"]
