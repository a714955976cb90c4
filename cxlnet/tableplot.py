"""The spread over seeds, drawn: one panel per metric of a table, a box and every seed's score for
each of our rows, and (optionally) the published rows' max ▲ and mean ● beside them. The spread is
why Chinese-XLNet reports max and mean; a PNG next to the table's markdown shows it."""
from __future__ import annotations

import textwrap
from pathlib import Path

from cxlnet.errors import atomic_write_via
from cxlnet.tableview import Row


def panels(spec: dict, rows: list[Row], published: bool) -> list[tuple[str, int, str]]:
    """(column, index of the metric in its cell, metric) for every metric some row can show."""
    out = []
    for column, metrics in spec["columns"].items():
        for i, metric in enumerate(metrics):
            ours = any(metric in r.values for r in rows if r.ours)
            theirs = published and any(r.cells.get(column) for r in rows if not r.ours)
            if ours or theirs:
                out.append((column, i, metric))
    return out


def plot_table(spec: dict, rows: list[Row], path: Path, published: bool = True) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    import numpy as np

    shown = panels(spec, rows, published)
    # one line of panels per column of the table, one panel per metric of its cell
    lines = list(dict.fromkeys(column for column, _, _ in shown)) or [None]
    width = max([1] + [index + 1 for _, index, _ in shown])
    fig, axes = plt.subplots(len(lines), width, figsize=(1.0 + 3.6 * max(width, 1.5), 0.6 + 3.6 * len(lines)),
                             squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    if not shown:
        axes[0][0].text(0.5, 0.5, "no finished runs yet", ha="center", va="center", transform=axes[0][0].transAxes)
    rng = np.random.default_rng(0)  # the jitter is drawn, not random from run to run
    for column, index, metric in shown:
        ax = axes[lines.index(column)][index]
        ax.set_axis_on()
        names = []
        for row in rows:
            if row.ours and metric in row.values:
                x = len(names)
                scores = list(row.values[metric].values())
                ax.boxplot([scores], positions=[x], widths=0.5, showfliers=False,
                           medianprops={"color": "tab:blue"})
                ax.scatter(x + rng.uniform(-0.12, 0.12, len(scores)), scores, s=18, color="tab:blue",
                           alpha=0.8, zorder=3, )
                names.append(f"{row.name}\n({len(scores)} seeds)")
            elif published and not row.ours and row.cells.get(column):
                x = len(names)
                top, mean = row.cells[column][index]
                ax.scatter([x], [top], marker="^", s=40, color="tab:gray", zorder=3)
                ax.scatter([x], [mean], marker="o", s=30, color="tab:gray", zorder=3)
                names.append(row.name)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_title(metric, fontsize=10)
        ax.set_ylabel("score", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    if published and any(not r.ours and any(r.cells.values()) for r in rows):
        fig.text(0.01, 0.01, "grey: published max ▲ / mean ● over 10 seeds", fontsize=8, color="tab:gray")
    fig.suptitle(textwrap.fill(spec["title"], 60), fontsize=11)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    atomic_write_via(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None}))
    plt.close(fig)
    return path
