"""Figures and tables for the tabs, built from the engine's plain data."""

from __future__ import annotations

import pandas as pd


def token_histogram(lengths: list[int], max_length: int):
    """Histogram of tokens per conversation with the max-length cut-off marked."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a Space
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 2.6))
    axis.hist(lengths, bins=30, color="#4a7ab5")
    axis.axvline(max_length, color="#c0392b", linestyle="--", label=f"max length {max_length}")
    axis.set_xlabel("tokens per conversation")
    axis.set_ylabel("conversations")
    axis.legend()
    figure.tight_layout()
    plt.close(figure)
    return figure


def curves_frame(metrics: list[dict], keys: tuple[str, ...]) -> pd.DataFrame:
    """Long-format frame (step, value, series) of the given metrics, for gr.LinePlot."""
    rows = [{"step": m["step"], "value": m[key], "series": key.replace("_", " ")}
            for m in metrics for key in keys if m.get(key) is not None]
    return pd.DataFrame(rows, columns=["step", "value", "series"])


def metrics_bar_chart(metrics: dict[str, dict]):
    """Grouped bars of every metric, base vs tuned."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(metrics)
    positions = range(len(names))
    figure, axis = plt.subplots(figsize=(6, 2.8))
    width = 0.38
    axis.bar([p - width / 2 for p in positions], [metrics[n]["base"] for n in names], width, label="base",
             color="#9aa5b1")
    axis.bar([p + width / 2 for p in positions], [metrics[n]["tuned"] for n in names], width, label="tuned",
             color="#e67e22")
    axis.set_xticks(list(positions), [n.replace("_", " ") for n in names])
    axis.set_ylim(0, 1)
    axis.legend()
    figure.tight_layout()
    plt.close(figure)
    return figure
