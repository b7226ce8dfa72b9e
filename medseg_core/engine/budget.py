"""Training for a time budget instead of a number of iterations (``SOLVER.BUDGET.MINUTES``).

What Ultralytics' ``time=`` does, per iteration rather than per epoch: the model trains for M
minutes of a clock, and its LR schedule is planned to end when the budget does.

* :class:`TrainingClock` (a hook) measures training time on two clocks at once: ``"wall"``
  (elapsed time) and ``"cpu"`` (this process's CPU time, all its threads; on a shared machine it
  does not grow while other jobs hold the cores). Spans inside :meth:`TrainingClock.paused`, the
  learning-curve evaluations and the checkpoints written for them, do not count. Its state is
  checkpointed, so a resumed training continues the same budget.
* :class:`BudgetPlanner` turns (iterations done, seconds spent) into a planned total: this
  session's average time per iteration (its first iteration, which includes the data loader's
  start, excluded) times the iterations left must fill the remaining budget.
* :class:`TrainingBudgetHook` re-plans at every iteration of the first ``REPLAN_PERIOD`` and
  then every ``REPLAN_PERIOD`` iterations (and at the last planned one): it sets
  ``trainer.max_iter`` (the loop of :mod:`.loop` follows it) and rebuilds the LR multiplier for
  the planned length (``SOLVER.STEPS`` scaled by plan / ``SOLVER.MAX_ITER``, read by the schedule
  at once). The warm-up is frozen at the first plan, at the config's fraction
  ``WARMUP_ITERS / MAX_ITER`` of it (a schedule written for 300 epochs keeps its shape when it
  is squeezed into minutes), and never moves afterwards; the momentum warm-up follows it.
  Training stops at the plan or as soon as the budget is spent, whichever comes first, and the
  hook saves ``model_final``; it also saves ``model_last`` every ``CHECKPOINT_MINUTES`` of budget
  so that an interrupted run resumes close to where it stopped.

With several processes (DDP) every decision is rank 0's, so that all ranks stop together.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from typing import Callable, Dict, Iterator, Optional

import torch

from .. import compat  # noqa: F401

from detectron2.engine import HookBase, hooks
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter

from ..errors import ConfigError
from .hooks import MomentumWarmupHook
from .schedule_scaling import rescaled_schedule, scaled_warmup

logger = logging.getLogger(__name__)

__all__ = ["CLOCKS", "TrainingClock", "BudgetPlanner", "TrainingBudgetHook", "rank0_value"]

CLOCKS: Dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def rank0_value(value):
    """``value`` as rank 0 has it (all ranks must call this together); the value itself when alone."""
    if comm.get_world_size() == 1:
        return value
    return comm.all_gather(value)[0]


def _retarget_eta(trainer, max_iter: int) -> None:
    """Point the console ETA at the planned end: Detectron2's CommonMetricPrinter keeps the
    ``max_iter`` it was built with (the config's, e.g. 12,900 for a 15-minute budget)."""
    for h in getattr(trainer, "_hooks", ()):
        if isinstance(h, hooks.PeriodicWriter):
            for w in h._writers:
                if isinstance(w, CommonMetricPrinter):
                    w._max_iter = int(max_iter)


class TrainingClock(HookBase):
    """Training seconds on the wall and CPU clocks, excluding :meth:`paused` spans.

    ``sources`` replaces the real clocks (``{"wall": fn, "cpu": fn}``), e.g. by fake ones in tests.
    """

    def __init__(self, sources: Optional[Dict[str, Callable[[], float]]] = None) -> None:
        self.sources = dict(sources or CLOCKS)
        self._carried = {k: 0.0 for k in self.sources}   # seconds of earlier sessions
        self._paused = {k: 0.0 for k in self.sources}    # paused seconds of earlier sessions
        self._start: Optional[Dict[str, float]] = None
        self._pause_start: Optional[Dict[str, float]] = None
        self._session_paused = {k: 0.0 for k in self.sources}
        self._stopped: Optional[Dict[str, float]] = None

    def _now(self) -> Dict[str, float]:
        return {k: fn() for k, fn in self.sources.items()}

    def before_train(self) -> None:
        self.start()

    def after_train(self) -> None:
        self._stopped = self._now()

    def start(self) -> None:
        self._start, self._stopped = self._now(), None
        self._session_paused = {k: 0.0 for k in self.sources}

    def seconds(self, kind: str = "wall") -> float:
        """Training seconds so far (earlier sessions included), paused spans excluded."""
        if kind not in self.sources:
            raise ConfigError(f"SOLVER.BUDGET.CLOCK must be one of {sorted(self.sources)}, got {kind!r}")
        if self._start is None:
            return self._carried[kind]
        now = (self._stopped or self._pause_start or self._now())[kind]
        return self._carried[kind] + now - self._start[kind] - self._session_paused[kind]

    def paused_seconds(self, kind: str = "wall") -> float:
        """Seconds spent inside :meth:`paused` (evaluations), earlier sessions included."""
        return self._paused[kind] + self._session_paused[kind]

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        if self._pause_start is not None or self._start is None:  # nested, or not started
            yield
            return
        self._pause_start = self._now()
        try:
            yield
        finally:
            now = self._now()
            for k in self.sources:
                self._session_paused[k] += now[k] - self._pause_start[k]
            self._pause_start = None

    def state_dict(self) -> Dict[str, Dict[str, float]]:
        return {"seconds": {k: float(self.seconds(k)) for k in self.sources},
                "paused": {k: float(self.paused_seconds(k)) for k in self.sources}}

    def load_state_dict(self, state: Dict[str, Dict[str, float]]) -> None:
        for k in self.sources:
            self._carried[k] = float(state.get("seconds", {}).get(k, 0.0))
            self._paused[k] = float(state.get("paused", {}).get(k, 0.0))


class BudgetPlanner:
    """Planned total iterations for a budget of ``budget_s`` seconds (pure arithmetic)."""

    def __init__(self, budget_s: float) -> None:
        if not budget_s > 0:
            raise ConfigError(f"SOLVER.BUDGET.MINUTES must be > 0 for a time budget, got {budget_s / 60:g}")
        self.budget_s = float(budget_s)

    def plan(self, iters_done: int, spent_s: float, seconds_per_iter: float) -> int:
        """Iterations done + as many as the remaining budget holds at ``seconds_per_iter``."""
        remaining = self.budget_s - spent_s
        if remaining <= 0 or not seconds_per_iter > 0:
            return int(iters_done) if remaining <= 0 else int(iters_done) + 1
        return int(iters_done) + int(math.floor(remaining / seconds_per_iter))


class TrainingBudgetHook(HookBase):
    """Re-plans and ends training so that it uses ``minutes`` of ``clock`` time (module doc)."""

    def __init__(self, cfg, clock: TrainingClock, minutes: float, kind: str = "wall",
                 replan_period: int = 10, checkpoint_minutes: float = 5.0) -> None:
        if kind not in clock.sources:
            raise ConfigError(f"SOLVER.BUDGET.CLOCK must be one of {sorted(clock.sources)}, got {kind!r}")
        self.cfg, self.clock, self.kind = cfg, clock, kind
        self.planner = BudgetPlanner(60.0 * float(minutes))
        self.replan_period = max(int(replan_period), 1)
        self.checkpoint_s = 60.0 * float(checkpoint_minutes)
        self.plan: Optional[int] = None        # planned total iterations
        self.warmup_iters: Optional[int] = None  # frozen at the first plan
        self.stopped_by = ""
        self._next_checkpoint = self.checkpoint_s
        self._session_iters = 0
        self._session_t0 = 0.0
        self._logged: Optional[int] = None

    # ------------------------------------------------------------------ hook
    def before_train(self) -> None:
        t = self.trainer
        for h in t._hooks:
            if isinstance(h, hooks.PeriodicCheckpointer):
                h.max_iter = None  # this hook saves model_final when the budget ends
        self._session_iters = 0
        spent = self.clock.seconds(self.kind)
        self._next_checkpoint = (math.floor(spent / self.checkpoint_s) + 1) * self.checkpoint_s if self.checkpoint_s > 0 else math.inf
        # until the first measurement: the config's schedule, at least two iterations ahead
        plan = self.plan if self.plan is not None else max(int(self.cfg.SOLVER.MAX_ITER), t.start_iter + 2)
        self._apply(max(plan, t.start_iter + 1), provisional=self.plan is None)
        logger.info("Time budget: %.1f min of %s clock (%.1f min spent), schedule re-planned as training goes",
                    self.planner.budget_s / 60, self.kind, spent / 60)

    def after_step(self) -> None:
        t = self.trainer
        self._session_iters += 1
        spent = self.clock.seconds(self.kind)
        if self._session_iters == 1:
            self._session_t0 = spent
        done = t.iter + 1
        if rank0_value(spent >= self.planner.budget_s):
            self.stopped_by = "budget"
            t.max_iter = done
            return
        n = self._session_iters
        due = n >= 2 and (n <= self.replan_period or n % self.replan_period == 0 or done >= t.max_iter)
        if due:
            rate = (spent - self._session_t0) / (n - 1)
            plan = rank0_value(self.planner.plan(done, spent, rate))
            if plan <= done:
                self.stopped_by = "budget"
                t.max_iter = done
                return
            if plan != self.plan:
                self._apply(plan)
        if done >= t.max_iter:
            self.stopped_by = "plan"
        elif rank0_value(spent >= self._next_checkpoint):
            self._next_checkpoint += self.checkpoint_s
            if comm.is_main_process():
                with self.clock.paused():
                    t.checkpointer.save("model_last", iteration=t.iter)

    def after_train(self) -> None:
        t = self.trainer
        if t.iter >= t.max_iter and comm.is_main_process():  # finished, not crashed
            t.checkpointer.save("model_final", iteration=t.iter - 1)
        logger.info("Time budget: trained %d iterations in %.1f min of %s clock (stopped by the %s)",
                    t.iter, self.clock.seconds(self.kind) / 60, self.kind, self.stopped_by or "plan")

    # ------------------------------------------------------------------ planning
    def _apply(self, plan: int, provisional: bool = False) -> None:
        """Set the loop's end and the LR multiplier to a planned total of ``plan`` iterations
        (``provisional``: before any measurement; the warm-up is frozen at the first real plan)."""
        t, cfg = self.trainer, self.cfg
        warmup = self.warmup_iters
        if warmup is None:
            warmup = scaled_warmup(cfg, plan)
            if not provisional:
                self.warmup_iters = warmup
                for h in t._hooks:
                    if isinstance(h, MomentumWarmupHook):  # the momentum warm-up follows the LR's
                        h.warmup_iters = max(warmup, 1)
        first = self.plan is None or provisional
        previous, self.plan = self.plan, int(plan)
        t.max_iter = self.plan
        _retarget_eta(t, self.plan)
        sched = t.scheduler
        if not hasattr(sched, "_multiplier"):
            raise ConfigError(
                f"SOLVER.BUDGET: the LR schedule {cfg.SOLVER.LR_SCHEDULER_NAME!r} ({type(sched).__name__}) "
                "cannot be re-planned; use a Detectron2 LRMultiplier schedule"
            )
        values = rescaled_schedule(cfg, self.plan, warmup_iters=warmup)
        planned = cfg.clone()
        planned.defrost()
        planned.SOLVER.MAX_ITER = values["SOLVER.MAX_ITER"]
        planned.SOLVER.WARMUP_ITERS = values["SOLVER.WARMUP_ITERS"]
        planned.SOLVER.STEPS = values["SOLVER.STEPS"]
        # built on a stand-in optimizer: constructing a scheduler writes the LR of its optimizer
        dummy = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=float(cfg.SOLVER.BASE_LR))
        fresh = t.build_lr_scheduler(planned, dummy)
        sched._multiplier, sched._max_iter = fresh._multiplier, self.plan
        for group, lr in zip(t.optimizer.param_groups, sched.get_lr()):
            group["lr"] = lr
        if not first and (self._logged is None or abs(self.plan - self._logged) >= 0.05 * self._logged):
            # the first real plan and changes of 5 % or more from the last one logged; not
            # smaller ones: Detectron2's setup_logger shows DEBUG lines, one every few steps
            logger.info("Time budget: re-planned to %d iterations (was %s)", self.plan,
                        previous if self._logged is None else self._logged)
            self._logged = self.plan

    def state_dict(self) -> Dict[str, object]:
        return {"plan": -1 if self.plan is None else int(self.plan),
                "warmup_iters": -1 if self.warmup_iters is None else int(self.warmup_iters)}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        self.plan = None if int(state.get("plan", -1)) < 0 else int(state["plan"])
        self.warmup_iters = None if int(state.get("warmup_iters", -1)) < 0 else int(state["warmup_iters"])
