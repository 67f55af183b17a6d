"""Loss-curve PNG from a training history."""

from transfertraj.model.loss_curves import plot_loss_curves


def test_plot_writes_a_png(tmp_path):
    history = [{"epoch": i, "train_loss": 1.0 / (i + 1), "val_loss": 1.2 / (i + 1) + 0.01 * i} for i in range(6)]
    out = plot_loss_curves(history, tmp_path / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5_000
