"""The training path stays alive: one short epoch on a tiny synthetic set."""

import pytest

from export.train import TrainConfig, train


@pytest.mark.slow
def test_one_short_epoch(tmp_path):
    report = train(TrainConfig(out=tmp_path, n_train=16, n_val=8, epochs=1, batch=8, workers=0,
                               weights_out=tmp_path / "w.pt"))
    assert (tmp_path / "w.pt").exists() and (tmp_path / "w.json").exists()
    assert 0.0 <= report["map50"] <= 1.0
    assert set(report) >= {"map50", "map50_95", "epochs", "total_seconds"}
