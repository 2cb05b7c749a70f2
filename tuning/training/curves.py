"""Training curves as PNG files in the run folder (loss and validation loss, learning rate; a DPO run's rewards)."""

from __future__ import annotations

from pathlib import Path

from tuning.atomic import staged_file
from tuning.runs.files import read_metrics

LOSS_PNG = "loss.png"
LEARNING_RATE_PNG = "learning_rate.png"
REWARDS_PNG = "rewards.png"  # DPO: the chosen and rejected answers' rewards, their margin, chosen's win share


def _plot(path: Path, series: dict[str, list[tuple[int, float]]], title: str, ylabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.2))
    for label, points in series.items():
        if points:
            steps, values = zip(*points)
            axis.plot(steps, values, marker="o" if len(points) < 20 else None, label=label)
    axis.set_title(title)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    with staged_file(path) as temp:  # the card and the Hub push read these; never half a picture
        figure.savefig(temp, dpi=110, format="png")
    plt.close(figure)


def save_training_curves(run_dir: str | Path) -> list[Path]:
    """Write loss.png and learning_rate.png (and a DPO run's rewards.png) from metrics.jsonl; returns the files
    written."""
    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir)
    if not metrics:
        return []

    def points(key):
        return [(m["step"], m[key]) for m in metrics if m.get(key) is not None]

    written = [run_dir / LOSS_PNG, run_dir / LEARNING_RATE_PNG]
    _plot(written[0], {"training loss": points("loss"), "validation loss": points("eval_loss")}, "Loss", "loss")
    _plot(written[1], {"learning rate": points("learning_rate")}, "Learning rate", "learning rate")
    if points("rewards/margins"):
        written.append(run_dir / REWARDS_PNG)
        _plot(written[2], {"chosen": points("rewards/chosen"), "rejected": points("rewards/rejected"),
                           "margin": points("rewards/margins"), "chosen wins (share)": points("rewards/accuracies")},
              "DPO rewards (beta x log-ratio to the parent)", "reward")
    return written
