"""Accuracy matrices as heatmaps."""

import numpy as np


def plot_matrices(panels, tasks, path):
    """Heatmaps of R[t][i] (row: after training task t, column: evaluated on task i), one panel per
    (R, title) in ``panels``, side by side, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = len(tasks)
    fig, axes = plt.subplots(1, len(panels), figsize=(len(panels) * (1.6 + 0.7 * T), 1.4 + 0.6 * T), squeeze=False)
    for ax, (R, title) in zip(axes[0], panels):
        grid = np.full((T, T), np.nan)
        for t in range(T):
            for i in range(t + 1):
                grid[t, i] = R[t][i]
                ax.text(i, t, f"{R[t][i]:.2f}", ha="center", va="center",
                        color="white" if R[t][i] < 0.6 else "black", fontsize=8)
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(T), [f"{i}-{n}" for i, n in enumerate(tasks)], rotation=45, ha="right")
        ax.set_yticks(range(T), [f"after {t}" for t in range(T)])
        ax.set_xlabel("evaluated on task")
        ax.set_title(title, fontsize=9)
    fig.subplots_adjust(wspace=0.45)
    fig.colorbar(im, ax=list(axes[0]), fraction=0.03)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
