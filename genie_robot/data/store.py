"""The Zarr episode store: robot episodes on disk (or object storage), written once, read for training.

Layout (diffusion_policy's ReplayBuffer convention, Zarr format 3; the contract is docs/data_format.md):
`data/rgb` (N, H, W, 3) uint8 with all episodes concatenated along time, optional `data/action`
(N, A) and `data/state` (N, S) float32, `meta/episode_ends` (E,) int64 cumulative, optional
`meta/instruction` (E,) strings. `StoreWriter` appends episodes so that a killed writer never leaves a
store that looks complete; `EpisodeStore` opens one read-only and validates it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numcodecs import blosc
from zarr.codecs import BloscCodec, BytesCodec
from zarr.storage import LocalStore

SCHEMA = "genie-robot/episodes"
SCHEMA_VERSION = 1
# Per-frame vectors are tiny; long chunks keep a window's actions in one read.
VECTOR_CHUNK_FRAMES = 1024
META_CHUNK_EPISODES = 4096


class StoreError(ValueError):
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
    return x.astype(np.float32, copy=False)


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
    """

    def __init__(self, arr: zarr.Array):
        self.arr = arr
        self.root: Path | None = None
        meta = arr.metadata
        codecs = list(getattr(meta, "codecs", ()))
        chunks = tuple(getattr(meta.chunk_grid, "chunk_shape", ()))
        if (
            isinstance(arr.store, LocalStore)
            and type(meta.chunk_grid).__name__ == "RegularChunkGrid"
            and chunks[1:] == tuple(arr.shape[1:])
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
            self.chunk = chunks[0]
            self.frame_shape = tuple(arr.shape[1:])
            self._key = f"{self.root}/c/{{}}{'/0' * (arr.ndim - 1)}"
            # Blosc output is at most its input plus a small header: one read gets the whole file.
            self._bufsize = int(np.prod(chunks)) * arr.dtype.itemsize + 65536

    def read(self, start: int, stop: int, stride: int = 1) -> np.ndarray:
        if self.root is None or stop <= start:
            return np.asarray(self.arr[start:stop:stride])
        out = np.empty((stop - start, *self.frame_shape), dtype=self.arr.dtype)
        c = self.chunk
        for k in range(start // c, (stop - 1) // c + 1):
            lo, hi = max(start, k * c), min(stop, (k + 1) * c)
            try:
                raw = self._read_file(self._key.format(k))
            except FileNotFoundError:  # never written: zarr's fill value
                out[lo - start : hi - start] = self.arr.fill_value
                continue
            if hi - lo == c:
                blosc.decompress(raw, out[lo - start : hi - start])
            else:
                whole = np.frombuffer(blosc.decompress(raw), dtype=self.arr.dtype).reshape(
                    c, *self.frame_shape
                )
                out[lo - start : hi - start] = whole[lo - k * c : hi - k * c]
        return out if stride == 1 else np.ascontiguousarray(out[::stride])

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
        failed add_episode left behind are overwritten, never shifted into the next episode."""
        arr.resize((n + len(values), *arr.shape[1:]))
        arr[n:] = values

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
        return cls(group, path, allow_incomplete=allow_incomplete)

    def _array(self, name: str, required: bool) -> zarr.Array | None:
        if name not in self._group:
            if required:
                raise StoreError(
                    f"{self.path}: missing array {name}; a genie-robot store needs data/rgb and "
                    f"meta/episode_ends (see docs/data_format.md), so rewrite it with StoreWriter"
                )
            return None
        arr = self._group[name]
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

        ends = np.asarray(ends_arr[:], dtype=np.int64)
        data = [rgb] + [a for a in vectors.values() if a is not None]
        limits = [a.shape[0] for a in data]
        max_e = instr.shape[0] if instr is not None else len(ends)
        committed = _committed_prefix(ends, limits, max_e)
        self.complete = bool(attrs.get("complete", False))
        if not self.complete and not allow_incomplete:
            raise StoreError(
                f"{p} is incomplete: its writer has not closed it cleanly (killed, failed or still writing); "
                f"it holds {committed} committed episodes. Open with allow_incomplete=True to read those, "
                f"or finish the store with StoreWriter(path, mode='a', ...) and close()"
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
        self._readers = {k: _TimeReader(a) for k, a in (("rgb", rgb), *vectors.items()) if a is not None}
        self._instruction = instr
        self._instructions: list[str | None] | None = None
        self.fps = float(attrs["fps"])
        self.source = str(attrs["source"])
        self.camera = str(attrs["camera"])
        self.attrs = attrs

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

    def __repr__(self) -> str:
        h, w = self.resolution
        return (
            f"EpisodeStore({self.path!r}, episodes={self.num_episodes}, frames={self.num_frames}, "
            f"{h}x{w}, fps={self.fps:g}, source={self.source!r}, complete={self.complete})"
        )


def disk_size(path: str, storage_options: dict | None = None) -> int:
    """Bytes the store occupies (sum of object sizes); works for local paths and fsspec URLs."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(str(path), **(storage_options or {}))
    return int(fs.du(root, total=True))


__all__ = ["Episode", "EpisodeStore", "StoreError", "StoreWriter", "SCHEMA_VERSION", "disk_size"]
