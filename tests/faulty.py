"""Learners that fail on purpose, selected with ``--model tests.faulty.<Name>`` in subprocess tests."""

from __future__ import annotations

from impala_lit import ImpalaModule


class RaisesAtStep3(ImpalaModule):
    """Raises inside ``training_step`` once the actors are running."""

    def training_step(self, batch, batch_idx):
        if self.global_step == 3:
            raise RuntimeError("injected failure at step 3")
        return super().training_step(batch, batch_idx)
