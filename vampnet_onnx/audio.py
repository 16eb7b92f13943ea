"""Audio handling around the model: reading, mixing to mono, writing back, atomic writing.

Runtime-only dependencies: numpy, soundfile (never torch).

The model does upstream's preprocessing itself (resampling to its rate, −24 LUFS, peak <= 1) and
hands its output back at the input's rate and loudness (docs/preprocessing.md). So the host only:

* ``load_audio`` reads any file libsndfile reads (WAV, FLAC, OGG, AIFF, MP3, ...) at any sample
  rate and channel count, and returns a :class:`PreparedAudio`: the mean of the channels (upstream's
  ``to_mono``) at the file's own rate, which the model takes with ``sample_rate``, plus what
  ``restore`` needs to give the output the input's shape.
* ``restore`` gives the model's mono output every channel of the input (a read-only view: one
  mono array repeated, no copy per channel), trimmed or padded to the input's length times the
  stretch, and scales it down to peak 1 if it exceeds it (so that integer formats never clip; the
  only case where the output ends up quieter than the input).
* ``atomic_writer`` / ``write_audio`` write outputs through a temporary file in the destination
  folder and ``os.replace``; on any error or KeyboardInterrupt no temporary or half-written file
  is left behind, and a path that is the input file is refused.

All user-facing problems raise :class:`AudioError` with a one-line message.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from .errors import AudioError, one_line
from .interface import MAX_SAMPLE_RATE

# Extensions soundfile/libsndfile name differently from their format.
_EXT_ALIASES = {"AIF": "AIFF", "AIFC": "AIFF", "OGA": "OGG"}
# Formats that are not self-describing (reading them back needs parameters): never written.
_NOT_WRITABLE = {"RAW"}


# --------------------------------------------------------------------------------------------
# reading and preprocessing


@dataclass
class PreparedAudio:
    """The model's input plus what ``restore`` needs to give the output the input's shape.

    ``samples``: float32 (S,), the mean of the file's channels at its own rate ``sample_rate`` (the
    model's ``audio`` row and ``sample_rate`` input). The rest describes the input file.
    """

    samples: np.ndarray
    sample_rate: int
    frames: int
    channels: int
    subtype: str | None
    format: str | None
    path: Path | None

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


READ_BLOCK = 1 << 16  # frames read at a time: a long file costs its float32 mono mix, not float64 copies


def load_audio(path: str | os.PathLike) -> PreparedAudio:
    """Read ``path`` and mix it to mono (see ``prepare_audio``), block by block: the mean of the
    channels in float64, stored as float32, so that only the mono mix is held whole.

    Raises :class:`AudioError` for a missing, unreadable, empty or non-finite input, a sample rate
    the model does not take, and an input whose mono mix is all zeros (silence: nothing to vamp).
    """
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise AudioError(f"input file not found: {p}")
    if p.is_dir():
        raise AudioError(f"input is a folder, not an audio file: {p}")
    mono, n = np.zeros(0, np.float32), 0
    try:
        with sf.SoundFile(str(p)) as f:
            rate, channels, subtype, fmt = f.samplerate, f.channels, f.subtype, f.format
            if 0 < rate <= MAX_SAMPLE_RATE:
                # filled in place (the file's frame count, grown if a format reports too few):
                # the mix is held once, not as blocks and their concatenation
                mono = np.empty(max(int(f.frames), 0), np.float32)
                for block in f.blocks(READ_BLOCK, dtype="float64", always_2d=True):
                    if not np.all(np.isfinite(block)):
                        raise AudioError(f"input contains NaN or infinite samples: {p}")
                    if n + block.shape[0] > mono.shape[0]:
                        grown = np.empty(max(2 * mono.shape[0], n + block.shape[0]), np.float32)
                        grown[:n] = mono[:n]
                        mono = grown
                    mono[n:n + block.shape[0]] = block.mean(axis=1)
                    n += block.shape[0]
    except PermissionError as e:
        raise AudioError(f"cannot read {p}: permission denied") from e
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as e:
        raise AudioError(
            f"cannot read {p} as audio (not a WAV/FLAC/OGG/... file soundfile can read): "
            f"{one_line(e)}"
        ) from e
    if rate <= 0 or rate > MAX_SAMPLE_RATE:
        raise AudioError(f"input has a sample rate of {rate} Hz; the model takes 1 to {MAX_SAMPLE_RATE} Hz "
                         f"(resample the file first): {p}")
    mono = mono[:n] if n < mono.shape[0] else mono
    if mono.shape[0] == 0 or channels == 0:
        raise AudioError(f"input has no samples: {p}")
    if not np.any(mono):
        raise AudioError(f"input is silent (its mix to mono is all zeros): {p}")
    return PreparedAudio(samples=mono, sample_rate=int(rate), frames=int(mono.shape[0]), channels=int(channels),
                         subtype=subtype, format=fmt, path=p)


def prepare_audio(data: np.ndarray, rate: int, *, subtype: str | None = None,
                  format: str | None = None, path: Path | None = None) -> PreparedAudio:
    """The model's input from ``data`` ((frames,) or (frames, channels) at ``rate`` Hz): the mean
    of the channels (upstream's ``to_mono``) at the input's own rate, which the model resamples and
    normalises itself; plus what ``restore`` needs to give the output the input's shape."""
    data = np.asarray(data, dtype=np.float64)
    data = data[:, None] if data.ndim == 1 else data
    name = f": {path}" if path is not None else ""
    if data.ndim != 2 or data.shape[0] == 0 or data.shape[1] == 0:
        raise AudioError(f"audio must be (frames,) or (frames, channels) with samples, got shape {data.shape}{name}")
    if not np.all(np.isfinite(data)):
        raise AudioError(f"input contains NaN or infinite samples{name}")
    if not 0 < int(rate) <= MAX_SAMPLE_RATE:
        raise AudioError(f"input has a sample rate of {rate} Hz; the model takes 1 to {MAX_SAMPLE_RATE} Hz "
                         f"(resample it first){name}")
    mono = data.mean(axis=1)
    if not np.any(mono):
        raise AudioError(f"input is silent (its mix to mono is all zeros){name}")
    return PreparedAudio(samples=mono.astype(np.float32), sample_rate=int(rate), frames=int(data.shape[0]),
                         channels=int(data.shape[1]), subtype=subtype, format=format, path=path)


# --------------------------------------------------------------------------------------------
# postprocessing


def restore(out: np.ndarray, ref: PreparedAudio, stretch: int = 1) -> np.ndarray:
    """Model output (rows, S) (already at the input's rate and loudness) -> float32
    (rows, ref.frames·stretch, ref.channels): each row trimmed or zero-padded to the input's frames
    times the stretch and scaled down to peak 1 if it exceeds it, the same samples in every channel.
    A read-only view that repeats one mono array across the channels; the model's own output array
    when it needs no change (it has the right length and peak <= 1), so that a long song's output
    is held once, not once per channel."""
    y = np.asarray(out, dtype=np.float32)
    if not np.isfinite(y).all():
        raise AudioError("the model produced NaN or infinite samples")
    frames = ref.frames * int(stretch)
    if y.shape[1] != frames:
        n = min(frames, y.shape[1])
        y = np.concatenate([y[:, :n], np.zeros((y.shape[0], frames - n), np.float32)], axis=1)
    peak = np.maximum(y.max(axis=1, initial=0.0), -y.min(axis=1, initial=0.0))
    if (peak > 1.0).any():
        # float32 ÷ float32 rounds as float64 ÷ float64 then rounded to float32 does
        y = y / np.maximum(peak, np.float32(1.0))[:, None]
    return np.broadcast_to(y[:, :, None], (y.shape[0], frames, ref.channels))


# --------------------------------------------------------------------------------------------
# output paths and atomic writing


def output_format(path: str | os.PathLike) -> str:
    """The soundfile format for an output path, from its extension; AudioError if unwritable."""
    import soundfile as sf

    ext = Path(path).suffix.lstrip(".").upper()
    if not ext:
        raise AudioError(f"output has no file extension (use .wav, .flac, .ogg, ...): {path}")
    fmt = _EXT_ALIASES.get(ext, ext)
    if fmt not in sf.available_formats() or fmt in _NOT_WRITABLE:
        raise AudioError(
            f"cannot write '.{ext.lower()}' files (soundfile writes e.g. .wav, .flac, .ogg, "
            f".aiff, .mp3): {path}"
        )
    return fmt


_HIGH_RES = {"FLOAT", "DOUBLE", "PCM_24", "PCM_32"}


def choose_subtype(fmt: str, input_subtype: str | None, *, rate: int,
                   channels: int = 1, path: str | os.PathLike | None = None) -> str:
    """The input's sample format if ``fmt`` takes it; else PCM_24 for a high-resolution input
    (float, 24/32-bit) if ``fmt`` takes it; else ``fmt``'s default.

    Each candidate is tried by writing a few silent frames at ``rate`` and ``channels`` in memory:
    ``soundfile.check_format`` accepts combinations libsndfile cannot write (MP3 data in WAV), and
    some formats limit rates or channels (MP3: 48 kHz, 2 channels). AudioError if none works.
    """
    import soundfile as sf

    candidates = []
    if input_subtype and sf.check_format(fmt, input_subtype):
        candidates.append(input_subtype)
    if input_subtype in _HIGH_RES and sf.check_format(fmt, "PCM_24"):
        candidates.append("PCM_24")
    candidates.append(sf.default_subtype(fmt))
    problem = ""
    for subtype in candidates:
        try:
            sf.write(io.BytesIO(), np.zeros((16, channels), np.float32), rate, format=fmt,
                     subtype=subtype)
            return subtype
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
            problem = one_line(e)
    name = f" {path}" if path is not None else ""
    raise AudioError(f"cannot write{name} as {fmt} at {rate} Hz with {channels} channel(s) "
                     f"({problem}); use another format, e.g. .wav or .flac")


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True if the two paths name the same file (existing files: samefile; else resolved)."""
    pa, pb = Path(a), Path(b)
    try:
        if pa.exists() and pb.exists():
            return os.path.samefile(pa, pb)
    except OSError:
        pass
    return pa.resolve() == pb.resolve()


def check_output_path(path: str | os.PathLike, *, inputs: Iterable = ()) -> Path:
    """Validate an output path before any work: folder exists and is writable, not a folder, not
    an input. ``inputs``: paths, or (what, path) pairs naming them in the message."""
    p = Path(path)
    for i in inputs:
        what, i = i if isinstance(i, tuple) else ("an input", i)
        if i is not None and same_file(p, i):
            raise AudioError(f"refusing to overwrite the input file {i} ({what}) with an output; "
                             f"choose another output path")
    if p.exists() and p.is_dir():
        raise AudioError(f"output is a folder: {p}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise AudioError(f"output folder does not exist: {parent}")
    check_writable_folder(parent)
    return p


def check_writable_folder(folder: str | os.PathLike) -> None:
    """AudioError unless a file can be created in ``folder`` (tried: permission bits do not tell
    for root, read-only mounts or ACLs)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".vampnet-onnx-probe.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise AudioError(f"cannot write to the output folder {folder}: "
                         f"{e.strerror or one_line(e)}") from e
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def os_error_text(err: OSError) -> str:
    """An OSError in words; a full disk (or quota) says what to do about it."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{err.strerror or 'no space left on device'} (free some space or write elsewhere)"
    return err.strerror or one_line(err)


def flush_to_disk(path: Path) -> None:
    """fsync ``path``: a disk that fills up while the data is flushed (delayed allocation, network
    file systems) raises here, before the file is renamed into place, not after."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class AtomicOutputs:
    """Collects outputs as temporary files beside their destinations, then renames them all.

    Use as a context manager: ``add(path, write)`` calls ``write(tmp_path)``; on leaving the block
    without an exception every temporary file is moved into place with ``os.replace``; on any
    exception (KeyboardInterrupt included) every temporary file is removed and nothing is renamed.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def add(self, path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
        dest = Path(path)
        parent = dest.parent if str(dest.parent) else Path(".")
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=parent)
        except OSError as e:
            raise AudioError(f"cannot write to {parent}: {one_line(e)}") from e
        os.close(fd)
        tmp_path = Path(tmp)
        self._pending.append((tmp_path, dest))
        try:
            write(tmp_path)
            flush_to_disk(tmp_path)
        except OSError as e:
            raise AudioError(f"cannot write {dest}: {os_error_text(e)}") from e
        with contextlib.suppress(OSError):
            os.chmod(tmp_path, 0o666 & ~_umask())
        return dest

    def discard(self) -> None:
        for tmp, _ in self._pending:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._pending.clear()

    def commit(self) -> list[Path]:
        done = []
        try:
            for tmp, dest in self._pending:
                try:
                    os.replace(tmp, dest)
                except OSError as e:
                    raise AudioError(f"cannot write {dest}: {one_line(e)}") from e
                done.append(dest)
        finally:
            # anything not renamed (error mid-way) is removed
            for tmp, _ in self._pending:
                if tmp.exists():
                    with contextlib.suppress(OSError):
                        tmp.unlink()
            self._pending.clear()
        return done

    def __enter__(self) -> "AtomicOutputs":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


@contextlib.contextmanager
def atomic_writer() -> Iterator[AtomicOutputs]:
    """``with atomic_writer() as out: out.add(path, fn)`` — see :class:`AtomicOutputs`."""
    outs = AtomicOutputs()
    with outs:
        yield outs


WRITE_BLOCK = 1 << 16  # frames handed to the encoder at a time


class _KeepingReason:
    """A binary file for soundfile's virtual I/O that keeps the OSError of a failed write (a full
    disk) and reports a short write instead, so that libsndfile fails cleanly ("System error.")
    and the caller can give the reason."""

    def __init__(self, f) -> None:
        self.f, self.error = f, None

    def write(self, data: bytes) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = self.error or e
            return 0

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.f.seek(offset, whence)

    def tell(self) -> int:
        return self.f.tell()


def write_audio_file(tmp: Path, data: np.ndarray, rate: int, fmt: str, subtype: str,
                     dest: Path | None = None) -> None:
    """Write ``data`` (frames, channels) to ``tmp`` with an explicit format; AudioError on failure.

    Encoded WRITE_BLOCK frames at a time straight into the file (no copy of the whole encoded
    file, and ``data`` may be a read-only view such as ``restore``'s); a failed write (a full disk)
    is reported with Python's reason, not libsndfile's "System error.".
    """
    import soundfile as sf

    name = dest if dest is not None else tmp
    try:
        f = open(tmp, "wb")
    except OSError as e:
        raise AudioError(f"cannot write {name}: {os_error_text(e)}") from e
    sink = _KeepingReason(f)
    failed = None
    with f:
        try:
            with sf.SoundFile(sink, "w", samplerate=rate, channels=data.shape[1], format=fmt, subtype=subtype) as out:
                for start in range(0, data.shape[0], WRITE_BLOCK):
                    out.write(np.ascontiguousarray(data[start:start + WRITE_BLOCK]))
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, AssertionError) as e:
            failed = e
    if sink.error is not None:
        raise AudioError(f"cannot write {name}: {os_error_text(sink.error)}") from sink.error
    if failed is not None:
        raise AudioError(f"cannot write {name} ({fmt}/{subtype}, {rate} Hz): {one_line(failed)}") from failed


def write_audio(path: str | os.PathLike, data: np.ndarray, rate: int, *,
                subtype: str | None = None, input_path: str | os.PathLike | None = None) -> Path:
    """Atomically write one audio file (format from the extension; ``subtype`` kept if possible).

    Refuses to overwrite ``input_path``. Leaves no temporary file behind on failure.
    """
    dest = check_output_path(path, inputs=(input_path,))
    fmt = output_format(dest)
    sub = choose_subtype(fmt, subtype, rate=rate, channels=int(np.shape(data)[1]) if np.ndim(data) == 2 else 1,
                         path=dest)
    with atomic_writer() as out:
        out.add(dest, lambda tmp: write_audio_file(tmp, data, rate, fmt, sub, dest))
    return dest
