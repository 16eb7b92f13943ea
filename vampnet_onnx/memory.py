"""How many variations (rows of one batch) the available memory holds."""
from __future__ import annotations

import os

from .errors import UsageError
from .session import human_size
from .paths import model_files

MAX_VARIATIONS = 256
"""Hard cap on variations (one batch); memory usually allows fewer (``check_memory``)."""
ROW_WEIGHTS_SHARE = 0.25
ROW_BYTES_PER_SAMPLE = 256
"""Estimated peak memory of one batch row beyond the weights: ROW_WEIGHTS_SHARE of the weights'
size (the activations inside one transformer chunk and one codec window, which grow with the
model, not with the input) plus ROW_BYTES_PER_SAMPLE per input sample at the model's rate (the
signal and its codes). Measured at real size: 0.65 GB above the 2.6 GB of weights for 10 s,
1.05 GB for 60 s; the estimate gives 0.77 and 1.33 GB."""


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (MemAvailable of /proc/meminfo), if known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(n: int, samples: int, rate: int, model: str | os.PathLike) -> None:
    """Refuse more variations than the available memory can hold (an estimate; see
    ROW_WEIGHTS_SHARE): the batch would otherwise be killed for memory mid-run."""
    available = available_memory()
    if n <= 1 or available is None:
        return
    weights = sum(f.stat().st_size for f in model_files(model) if f.is_file())
    per_row = int(ROW_WEIGHTS_SHARE * weights) + samples * ROW_BYTES_PER_SAMPLE
    fit = max(1, (available - weights) // per_row)
    if n > fit:
        raise UsageError(
            f"{n} variations would need about {human_size(weights + n * per_row)} of memory for "
            f"this {samples / rate:.1f} s input, and {human_size(available)} is available: use at "
            f"most {fit} variations (or a shorter input)")
