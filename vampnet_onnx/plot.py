"""A picture of a run: input codes, mask and output codes (`vamp --plot`; needs matplotlib)."""
from __future__ import annotations

import numpy as np


def plot_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_plot(fileobj, codes: np.ndarray, mask: np.ndarray, codes_out: np.ndarray, title: str = "") -> None:
    """PNG with three panels (input codes, mask, output codes), codebooks x frames, per row."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rows = codes.shape[0]
    code_max = max(int(np.max(codes)), int(np.max(codes_out)), 1)  # one colour scale for both
    T = codes.shape[-1]
    width = min(24.0, max(6.0, 2.0 + T / 40.0))
    fig = Figure(figsize=(min(width * rows, 36.0), 7.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, rows, squeeze=False)
    panels = [("input codes", codes, "viridis"), ("mask (1 = generate)", mask, "gray_r"),
              ("output codes", codes_out, "viridis")]
    for r in range(rows):
        for k, (name, data, cmap) in enumerate(panels):
            ax = axes[k][r]
            im = ax.imshow(data[r], aspect="auto", origin="lower", interpolation="nearest", cmap=cmap,
                           vmin=0, vmax=1 if k == 1 else code_max)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            label = name if rows == 1 else f"{name}, variation {r + 1}"
            ax.set_title(label, fontsize=9)
            ax.set_ylabel("codebook")
            if k == 2:
                ax.set_xlabel("frame")
            fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(fileobj, format="png", dpi=100)
