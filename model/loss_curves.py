"""Training and validation loss by epoch, from a checkpoint's history, as a PNG.

transfertraj pretrain ... --out DIR        # writes DIR/loss_curves.png next to best.pt / last.pt
python -m model.loss_curves DIR/last.pt DIR/loss_curves.png
"""

from __future__ import annotations

import sys
from pathlib import Path


def plot_loss_curves(history: list[dict], out: Path, *, title: str = "") -> Path:
    """history: [{"epoch", "train_loss", "val_loss", ...}] as model.train.fit records it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] + 1 for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot(epochs, [h["train_loss"] for h in history], marker="o", ms=3, label="train")
    ax.plot(epochs, [h["val_loss"] for h in history], marker="o", ms=3, label="validation")
    best = min(history, key=lambda h: h["val_loss"])
    ax.axvline(best["epoch"] + 1, color="grey", ls=":", lw=1, label=f"best epoch {best['epoch'] + 1}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("masked-recovery loss (MSE, scaled)")
    ax.set_title(title or "loss by epoch")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_checkpoint(checkpoint: Path, out: Path) -> Path:
    from transfertraj.model.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint)
    task = state.get("train_config", {}).get("task", "training")
    return plot_loss_curves(state["history"], out, title=f"{task}: loss by epoch")


if __name__ == "__main__":
    print(plot_checkpoint(Path(sys.argv[1]), Path(sys.argv[2])))
