"""``DataWaitMonitor``: the share of the learner's time spent waiting for batches, in a real Trainer."""

from __future__ import annotations

import time

import lightning.pytorch as pl
import pytest
import torch

from impala_lit.app.callbacks import DataWaitMonitor


class SlowBatches:
    """An endless stream whose every batch takes ``seconds`` to arrive, as from busy actors."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __iter__(self):
        while True:
            time.sleep(self.seconds)
            yield torch.ones(4, 2)


class SlowStep(pl.LightningModule):
    """A learner whose every step takes ``seconds``; records the logged wait share."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.layer = torch.nn.Linear(2, 1)
        self.wait_frac: list[float] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        time.sleep(self.seconds)
        return self.layer(batch).sum()

    def on_train_batch_end(self, *args) -> None:
        logged = self.trainer.callback_metrics.get("time/data_wait_frac")
        if logged is not None:
            self.wait_frac.append(float(logged))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


# sleeps of 0.2 s keep the loop's own time per step small beside them while another test shares the cores
# (parallel workers): with 0.06 s the step-bound case failed once
@pytest.mark.parametrize(("data_s", "step_s", "low", "high"), [(0.2, 0.0, 0.8, 1.0), (0.0, 0.2, 0.0, 0.2)])
def test_wait_share_follows_who_is_slower(data_s: float, step_s: float, low: float, high: float, tmp_path) -> None:
    module = SlowStep(step_s)
    trainer = pl.Trainer(
        max_steps=12,
        callbacks=[DataWaitMonitor()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, train_dataloaders=SlowBatches(data_s))
    assert len(module.wait_frac) >= 10  # logged from the second step on
    assert low <= module.wait_frac[-1] <= high, module.wait_frac
    step = float(trainer.callback_metrics["time/step_s"])
    assert step_s <= step < step_s + 0.1
