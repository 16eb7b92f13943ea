"""Audio handling around the model: reading, preprocessing, postprocessing, atomic writing.

Runtime-only dependencies: numpy, soundfile, soxr, pyloudnorm (never torch).

Pipeline (upstream's Interface._preprocess, and what the app does with the output):

* ``load_audio`` reads any file libsndfile reads (WAV, FLAC, OGG, AIFF, MP3, ...) at any sample
  rate and channel count, and returns a :class:`PreparedAudio`: the model's input (44.1 kHz, mono =
  mean of the channels, normalised to -24 LUFS, then scaled down to peak <= 1 if it exceeds it,
  exactly as upstream ``Interface._preprocess``) together with what is needed to undo it.
  Upstream preprocesses a second time on the device inside ``encode``; on a CPU that second pass is
  the identity up to float rounding, so we do it once (item 32).
* ``restore`` turns the model's 44.1 kHz mono output back into a file-shaped signal: the input's
  sample rate, the input's exact length (frames), the input's channel count (the mono result is
  copied to every channel) and the input's loudness (item 34: upstream renormalises the output to
  the original input's loudness). Loudness is measured on the file's channels (BS.1770 channel
  sum) for both input and output, so a loudness meter reads the same value on both; for a mono
  input this is exactly upstream's measure (upstream measures the mono mix, which differs for
  multichannel input). If that gain pushes the peak above 1, the signal is scaled down to peak 1
  so that integer formats never clip (the only case where the output ends up quieter than the
  input).
* ``atomic_writer`` / ``write_audio`` write outputs through a temporary file in the destination
  folder and ``os.replace``; on any error or KeyboardInterrupt no temporary or half-written file
  is left behind, and a path that is the input file is refused.

Loudness is measured with pyloudnorm's BS.1770 meter (K-weighting, 400 ms blocks, 75 % overlap,
gates at -70 LUFS and -10 LU) and, like audiotools' ``Meter``, signals shorter than 0.5 s are
zero-padded to 0.5 s for the measurement, the signal is zero-padded at the end so that every
sample is covered by a block, and the result is clamped below at -70 LUFS.

All user-facing problems raise :class:`AudioError` with a one-line message.
"""

from __future__ import annotations

import contextlib
import errno
import io
import math
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

SAMPLE_RATE = 44100
"""The model's sample rate."""
TARGET_LUFS = -24.0
"""Loudness the model's input is normalised to (upstream ``_preprocess``)."""
MIN_LUFS = -70.0
"""Loudness floor (audiotools clamps its meter here); an input at or below it counts as silent."""
MIN_MEASURE_S = 0.5
"""Signals shorter than this are zero-padded to it for loudness measurement (audiotools)."""
RESAMPLE_QUALITY = "HQ"
"""soxr quality used in both directions."""

# Extensions soundfile/libsndfile name differently from their format.
_EXT_ALIASES = {"AIF": "AIFF", "AIFC": "AIFF", "OGA": "OGG"}
# Formats that are not self-describing (reading them back needs parameters): never written.
_NOT_WRITABLE = {"RAW"}


class AudioError(Exception):
    """A problem with an audio file or an output path, explained in one line."""


# --------------------------------------------------------------------------------------------
# loudness


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def loudness(x: np.ndarray, rate: int) -> float:
    """Integrated loudness (LUFS) of ``x`` ((n,) mono or (n, C)), audiotools-style.

    pyloudnorm's BS.1770 meter with pyloudnorm's channel weights (1, 1, 1, 1.41, 1.41) for up to
    five channels; more than five channels are measured on their mono mix. Shorter than 0.5 s:
    zero-padded to 0.5 s; the end is zero-padded so every sample falls in a 400 ms block (hop
    100 ms); the result is clamped below at ``MIN_LUFS`` (silence gives exactly ``MIN_LUFS``).
    """
    import pyloudnorm

    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    elif x.ndim == 2 and x.shape[1] > 5:
        x = x.mean(axis=1)
    n = x.shape[0]
    block = int(round(0.4 * rate))
    hop = int(round(0.1 * rate))
    length = max(n, int(math.ceil(MIN_MEASURE_S * rate)), block)
    n_blocks = int(math.ceil((length - block) / hop)) + 1
    length = block + (n_blocks - 1) * hop  # every sample covered by a block (audiotools)
    if length > n:
        pad = [(0, length - n)] + [(0, 0)] * (x.ndim - 1)
        x = np.pad(x, pad)
    if not np.any(x):
        return MIN_LUFS
    meter = pyloudnorm.Meter(rate)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        value = float(meter.integrated_loudness(x))
    if not math.isfinite(value):
        return MIN_LUFS
    return max(value, MIN_LUFS)


def gain_db_to_linear(db: float) -> float:
    return float(10.0 ** (db / 20.0))


# --------------------------------------------------------------------------------------------
# reading and preprocessing


@dataclass
class PreparedAudio:
    """The model's input plus what ``restore`` needs to give the output the input's shape.

    ``samples``: float32 (S,) at the model's rate ``model_rate``, mono, -24 LUFS, peak <= 1 (what
    the model's ``audio`` input expects, one row). The rest describes the input file.
    """

    samples: np.ndarray
    sample_rate: int
    frames: int
    channels: int
    loudness: float
    subtype: str | None
    format: str | None
    path: Path
    model_rate: int = SAMPLE_RATE

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int, str | None, str | None]:
    """Read an audio file as float64 (frames, channels), validated.

    Returns ``(data, sample_rate, subtype, format)``. Raises :class:`AudioError` for a missing
    file, a folder, an unreadable or non-audio file, an empty file and NaN/inf samples.
    """
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise AudioError(f"input file not found: {p}")
    if p.is_dir():
        raise AudioError(f"input is a folder, not an audio file: {p}")
    try:
        info = sf.info(str(p))
        data, rate = sf.read(str(p), dtype="float64", always_2d=True)
    except PermissionError as e:
        raise AudioError(f"cannot read {p}: permission denied") from e
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as e:
        raise AudioError(
            f"cannot read {p} as audio (not a WAV/FLAC/OGG/... file soundfile can read): "
            f"{_one_line(e)}"
        ) from e
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise AudioError(f"input has no samples: {p}")
    if rate <= 0:
        raise AudioError(f"input has an invalid sample rate ({rate}): {p}")
    if not np.all(np.isfinite(data)):
        raise AudioError(f"input contains NaN or infinite samples: {p}")
    return data, int(rate), getattr(info, "subtype", None), getattr(info, "format", None)


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """soxr high-quality resampling along axis 0 (no-op for equal rates)."""
    if rate_in == rate_out:
        return x
    import soxr

    return soxr.resample(x, rate_in, rate_out, quality=RESAMPLE_QUALITY)


def preprocess(mono: np.ndarray, rate: int, *, what: str = "input", model_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Upstream ``_preprocess`` on a mono signal: resample to the model's rate, -24 LUFS, peak <= 1.

    (Mixing to mono before resampling is the same as after: both are linear.) Returns float32.
    Raises :class:`AudioError` if the signal is silent (at or below -70 LUFS).
    """
    x = resample(np.asarray(mono, dtype=np.float64), rate, model_rate)
    lufs = loudness(x, model_rate)
    if lufs <= MIN_LUFS:
        raise AudioError(f"{what} is silent (loudness at or below {MIN_LUFS:g} LUFS)")
    x = x * gain_db_to_linear(TARGET_LUFS - lufs)
    peak = float(np.max(np.abs(x)))
    if peak > 1.0:
        x = x / peak
    return x.astype(np.float32)


def load_audio(path: str | os.PathLike, model_rate: int = SAMPLE_RATE) -> PreparedAudio:
    """Read ``path`` and prepare the model input at ``model_rate`` (see the module docstring).

    Raises :class:`AudioError` for a missing, unreadable, empty, silent or non-finite input.
    """
    data, rate, subtype, fmt = read_audio(path)
    lufs_in = loudness(data, rate)
    if lufs_in <= MIN_LUFS:
        raise AudioError(f"input is silent (loudness at or below {MIN_LUFS:g} LUFS): {path}")
    samples = preprocess(data.mean(axis=1), rate, what=f"input mixed to mono ({path})", model_rate=model_rate)
    return PreparedAudio(
        samples=samples,
        sample_rate=rate,
        frames=int(data.shape[0]),
        channels=int(data.shape[1]),
        loudness=lufs_in,
        subtype=subtype,
        format=fmt,
        path=Path(path),
        model_rate=model_rate,
    )


# --------------------------------------------------------------------------------------------
# postprocessing


def restore(out: np.ndarray, ref: PreparedAudio, stretch: int = 1) -> np.ndarray:
    """Model output (S,) at the model's rate, mono -> float32 (ref.frames·stretch, ref.channels) at
    ref's rate (`stretch`: the model's time stretch factor; its output is that many times as long).

    Resampled to the input's sample rate, trimmed or zero-padded to the input's exact number of
    frames times the stretch, copied to each of the input's channels, gain-matched to the input's loudness (as
    measured on the file's channels), then scaled down to peak 1 if it exceeds it.
    """
    y = np.asarray(out, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(y)):
        raise AudioError("the model produced NaN or infinite samples")
    y = resample(y, ref.model_rate, ref.sample_rate)
    frames = ref.frames * int(stretch)
    if y.shape[0] >= frames:
        y = y[:frames]
    else:
        y = np.pad(y, (0, frames - y.shape[0]))
    y = np.repeat(y[:, None], ref.channels, axis=1)
    lufs = loudness(y, ref.sample_rate)
    if lufs > MIN_LUFS:  # a silent output stays silent
        y = y * gain_db_to_linear(ref.loudness - lufs)
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if peak > 1.0:
        y = y / peak
    return y.astype(np.float32)


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


def choose_subtype(fmt: str, input_subtype: str | None, *, rate: int = SAMPLE_RATE,
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
            problem = _one_line(e)
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
                         f"{e.strerror or _one_line(e)}") from e
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def os_error_text(err: OSError) -> str:
    """An OSError in words; a full disk (or quota) says what to do about it."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{err.strerror or 'no space left on device'} (free some space or write elsewhere)"
    return err.strerror or _one_line(err)


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
            raise AudioError(f"cannot write to {parent}: {_one_line(e)}") from e
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
                    raise AudioError(f"cannot write {dest}: {_one_line(e)}") from e
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


def write_audio_file(tmp: Path, data: np.ndarray, rate: int, fmt: str, subtype: str,
                     dest: Path | None = None) -> None:
    """Write ``data`` (frames, channels) to ``tmp`` with an explicit format; AudioError on failure.

    The file is encoded in memory and then written with Python's I/O: libsndfile reports a failed
    write (a full disk) only as "System error.", Python with its reason.
    """
    import soundfile as sf

    name = dest if dest is not None else tmp
    encoded = io.BytesIO()
    try:
        sf.write(encoded, data, rate, format=fmt, subtype=subtype)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioError(f"cannot write {name} ({fmt}/{subtype}, {rate} Hz): {_one_line(e)}") from e
    try:
        with open(tmp, "wb") as f:
            f.write(encoded.getbuffer())
    except OSError as e:
        raise AudioError(f"cannot write {name}: {os_error_text(e)}") from e


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
