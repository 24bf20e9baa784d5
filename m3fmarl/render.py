"""Off-screen matplotlib helpers (Agg canvas, no pyplot state); never used on a hot path."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray


def new_figure(width: float = 5.0, height: float = 5.0, dpi: int = 80) -> tuple[Any, Any]:
    """A figure with one axis on an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def figure_to_rgb(fig: Any) -> NDArray[np.uint8]:
    """Rasterise ``fig`` to an ``(H, W, 3)`` uint8 array."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
