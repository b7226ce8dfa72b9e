"""A training loop whose end may move while it runs.

Detectron2's ``TrainerBase.train`` iterates over ``range(start_iter, max_iter)``, fixed when
training starts. A time budget (:mod:`.budget`) re-plans the number of iterations as it measures
the iteration rate, so :class:`ReplannableTrainLoop` runs ``while trainer.iter < trainer.max_iter``
instead; everything else (EventStorage, hook calls, ``iter == max_iter`` after a successful run,
the exception log) is as in Detectron2. It is a base placed after ``DefaultTrainer`` in the
trainer's bases, so ``DefaultTrainer.train`` (result verification) calls it.
"""
from __future__ import annotations

import logging

from .. import compat  # noqa: F401

from detectron2.engine import TrainerBase
from detectron2.utils.events import EventStorage

__all__ = ["ReplannableTrainLoop"]


class ReplannableTrainLoop(TrainerBase):
    def train(self, start_iter: int, max_iter: int) -> None:
        # Detectron2's logger name, so that the messages appear (and read) as Detectron2's own
        logger = logging.getLogger("detectron2.engine.train_loop")
        logger.info("Starting training from iteration {}".format(start_iter))
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        with EventStorage(start_iter) as self.storage:
            try:
                self.before_train()
                # hooks may change self.max_iter (re-planned budget) at any step
                while self.iter < self.max_iter:
                    self.before_step()
                    self.run_step()
                    self.after_step()
                    self.iter += 1
            except Exception:
                logger.exception("Exception during training:")
                raise
            finally:
                self.after_train()
