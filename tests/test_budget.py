"""Time budget and learning curves (medseg_core.engine.budget / curves), on a fake clock: no real
timing. A minimal trainer runs the real re-plannable loop, the real LR scheduler hook and the real
budget / curve hooks; each "iteration" only advances the fake clock."""
import math

import pytest
import torch

import medseg_core  # noqa: F401

from detectron2.engine import hooks

from medseg_core.engine.budget import BudgetPlanner, TrainingBudgetHook, TrainingClock
from medseg_core.engine.curves import LearningCurveHook
from medseg_core.engine.hooks import MomentumWarmupHook
from medseg_core.engine.loop import ReplannableTrainLoop
from medseg_core.engine.schedule_scaling import MIN_WARMUP_ITERS, rescaled_schedule, scaled_warmup, schedule_opts
from medseg_core.engine.solver import build_lr_scheduler
from medseg_core.testing import load_test_cfg

LMSFA_CFG = "configs/Endoscapes-InstanceSegmentation/yolov8seg_n_640.yaml"
RCNN_CFG = "configs/Endoscapes-InstanceSegmentation/mask_rcnn_R50_FPN_scratch_bn_640.yaml"


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class FakeCheckpointer:
    def __init__(self):
        self.saved = []

    def save(self, name, **kw):
        self.saved.append((name, kw.get("iteration")))


class FakeTrainer(ReplannableTrainLoop):
    """Just what the hooks read: cfg, optimizer, scheduler, checkpointer, eval_model, test."""

    def __init__(self, cfg, clock, step_cost, eval_cost=0.0):
        super().__init__()
        self.cfg = cfg
        self.param = torch.nn.Parameter(torch.zeros(1))
        self.optimizer = torch.optim.SGD([self.param], lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM)
        self.scheduler = build_lr_scheduler(cfg, self.optimizer)
        self.checkpointer = FakeCheckpointer()
        self.clock, self.step_cost, self.eval_cost = clock, step_cost, eval_cost
        self.lrs, self.evals = [], []

    build_lr_scheduler = staticmethod(build_lr_scheduler)

    def run_step(self):
        self.lrs.append(self.optimizer.param_groups[0]["lr"])
        self.clock.t += self.step_cost(self.iter)

    def eval_model(self):
        return None

    def test(self, cfg, model):
        self.evals.append((self.iter, self.clock.t))
        self.clock.t += self.eval_cost  # fake evaluation time: must not count as training
        return {"segm": {"AP": float(self.iter)}}


def _trainer(cfg_path, minutes, step_cost, points=0, eval_cost=0.0, *opts):
    cfg = load_test_cfg(cfg_path, "SOLVER.BUDGET.MINUTES", minutes, "SOLVER.BUDGET.CHECKPOINT_MINUTES", "0.0", *opts)
    fake = FakeClock()
    clock = TrainingClock({"wall": fake, "cpu": fake})
    t = FakeTrainer(cfg, fake, step_cost, eval_cost)
    hs = [hooks.LRScheduler(), clock, TrainingBudgetHook(cfg, clock, minutes, "wall", 10, 0.0)]
    if cfg.SOLVER.WARMUP_MOMENTUM >= 0:
        hs.insert(1, MomentumWarmupHook(cfg.SOLVER.WARMUP_MOMENTUM, cfg.SOLVER.MOMENTUM, cfg.SOLVER.WARMUP_ITERS))
    if points:
        hs.append(LearningCurveHook(cfg, clock, points, "endoscapes_seg50_val", minutes, "wall"))
    t.register_hooks(hs)
    return t, clock, fake


def _cost(it):
    # slow first iteration (loader start), 1.0 s per iteration, 30 % slower after iteration 300
    return 12.0 if it == 0 else (1.0 if it < 300 else 1.3) + 0.1 * math.sin(it)


def test_planner_arithmetic():
    p = BudgetPlanner(600.0)
    assert p.plan(10, 100.0, 2.0) == 10 + 250
    assert p.plan(10, 600.0, 2.0) == 10  # spent: nothing more
    assert p.plan(10, 599.0, 2.0) == 10  # less than one iteration left


def test_schedule_ends_within_ten_percent_of_the_budget_on_a_fake_clock():
    t, clock, fake = _trainer(LMSFA_CFG, 10.0, _cost)
    t.train(0, int(t.cfg.SOLVER.MAX_ITER))
    budget = t.cfg.SOLVER.BUDGET.MINUTES * 60
    n = t.iter
    # ends when the budget does (within 10 %), and the schedule ends there too
    assert 0.9 * budget <= clock.seconds("wall") <= 1.1 * budget
    hook = next(h for h in t._hooks if isinstance(h, TrainingBudgetHook))
    assert abs(hook.plan - n) <= 0.1 * n
    end = t.cfg.SOLVER.BASE_LR * t.cfg.SOLVER.END_LR_FACTOR
    assert t.lrs[-1] <= end + 0.1 * (t.cfg.SOLVER.BASE_LR - end)
    # the warm-up was frozen at the first plan: the config's fraction of it (129 / 12900 = 1 %,
    # 5 iterations) is under the floor, so it is MIN_WARMUP_ITERS (Ultralytics' 100)
    assert hook.warmup_iters == MIN_WARMUP_ITERS
    mom = next(h for h in t._hooks if isinstance(h, MomentumWarmupHook))
    assert mom.warmup_iters == max(hook.warmup_iters, 1)
    # after the warm-up the LR decays (re-plans move it by less than 0.5 % of the base LR)
    after = t.lrs[hook.warmup_iters + 2:]
    assert all(b <= a + 0.005 * t.cfg.SOLVER.BASE_LR for a, b in zip(after, after[1:]))
    # ... from where the linear schedule stands at the end of the warm-up
    k, end_f = hook.warmup_iters + 2, t.cfg.SOLVER.END_LR_FACTOR
    assert after[0] == pytest.approx(t.cfg.SOLVER.BASE_LR * (1 - (1 - end_f) * k / n), rel=0.05)
    assert t.checkpointer.saved[-1][0] == "model_final"


def test_multistep_schedule_is_scaled_to_the_plan():
    t, clock, fake = _trainer(RCNN_CFG, 5.0, lambda it: 2.0)
    t.train(0, int(t.cfg.SOLVER.MAX_ITER))
    n = t.iter
    assert n == pytest.approx(150, abs=2) and clock.seconds() == pytest.approx(300, abs=2)
    # STEPS (10000, 12000) of 12900 -> drops at 77.5 % and 93 % of the plan
    lrs = torch.tensor(t.lrs)
    base = t.cfg.SOLVER.BASE_LR
    warm = min(MIN_WARMUP_ITERS, n // 2)  # warm-up 1000 of 12900 -> 12 in proportion, under the floor
    assert lrs[warm + 1] == pytest.approx(base) and lrs[warm - 3] < base
    low = (lrs[warm + 1:] < 0.5 * base).nonzero()
    assert abs(int(low[0]) + warm + 1 - round(10000 / 12900 * n)) <= 2
    assert lrs[-1] == pytest.approx(0.01 * base)


def test_curve_points_at_budget_fractions_and_evaluation_not_counted():
    t, clock, fake = _trainer(LMSFA_CFG, 10.0, lambda it: 1.0, 4, 50.0)
    t.train(0, int(t.cfg.SOLVER.MAX_ITER))
    curve = next(h for h in t._hooks if isinstance(h, LearningCurveHook))
    assert [r["point"] for r in curve.records] == [1, 2, 3]
    assert [round(r["seconds"]["wall"]) for r in curve.records] == [150, 300, 450]
    # 3 evaluations of 50 fake seconds each: the wall clock ran 150 s more than training time
    assert fake.t == pytest.approx(clock.seconds() + 150.0)
    assert clock.paused_seconds() == pytest.approx(150.0)
    assert clock.seconds() == pytest.approx(600, abs=1.01) and t.iter == pytest.approx(600, abs=1)


def test_console_eta_and_plan_log_follow_the_budget(caplog):
    """The ETA printer ends where the budget does, not at the config's 12,900 iterations, and
    re-plans are logged only when they move by 5 % (Detectron2's logger shows DEBUG lines)."""
    from detectron2.utils.events import CommonMetricPrinter

    t, clock, fake = _trainer(LMSFA_CFG, 10.0, _cost)
    printer = CommonMetricPrinter(int(t.cfg.SOLVER.MAX_ITER))
    t.register_hooks([hooks.PeriodicWriter([printer], period=1000)])
    with caplog.at_level("DEBUG", logger="medseg_core.engine.budget"):
        t.train(0, int(t.cfg.SOLVER.MAX_ITER))
    hook = next(h for h in t._hooks if isinstance(h, TrainingBudgetHook))
    assert printer._max_iter == hook.plan != int(t.cfg.SOLVER.MAX_ITER)
    plans = [r for r in caplog.records if "re-planned" in r.getMessage()]
    # _cost has one regime change (30 % slower after iteration 300): a few lines, not one per re-plan
    assert 1 <= len(plans) <= 6


def test_short_schedules_keep_a_warm_up_floor():
    cfg = load_test_cfg(RCNN_CFG)  # warm-up 1000 of 12900
    assert scaled_warmup(cfg, 12900) == 1000 and scaled_warmup(cfg, 6450) == 500
    assert scaled_warmup(cfg, 300) == 100        # 23 in proportion: the floor
    assert scaled_warmup(cfg, 90) == 45          # never more than half of the schedule
    assert scaled_warmup(cfg, 1) == 0
    zero = load_test_cfg(RCNN_CFG, "SOLVER.WARMUP_ITERS", "0")
    assert scaled_warmup(zero, 300) == 0         # no warm-up stays none
    short = load_test_cfg(RCNN_CFG, "SOLVER.WARMUP_ITERS", "10")
    assert scaled_warmup(short, 300) == 10       # nor longer than the config's own
    assert rescaled_schedule(cfg, 300)["SOLVER.WARMUP_ITERS"] == 100


def test_budget_state_resumes():
    t, clock, fake = _trainer(LMSFA_CFG, 10.0, lambda it: 1.0)
    # simulate a crash after 200 iterations: the checkpointed state carries spent time and plan
    def crash(it):
        if it == 200:
            raise KeyboardInterrupt
        return 1.0
    t.step_cost = crash
    with pytest.raises(KeyboardInterrupt):
        t.train(0, int(t.cfg.SOLVER.MAX_ITER))
    state = t.state_dict()
    t2, clock2, fake2 = _trainer(LMSFA_CFG, 10.0, lambda it: 1.0)
    t2.load_state_dict(state)
    t2.train(t2.iter + 1, int(t2.cfg.SOLVER.MAX_ITER))
    assert clock2.seconds() == pytest.approx(600, abs=1.01)
    assert t2.iter == pytest.approx(600, abs=2)


def test_rescaled_schedule_in_proportion():
    cfg = load_test_cfg(RCNN_CFG)
    v = rescaled_schedule(cfg, 1290)
    assert v == {"SOLVER.MAX_ITER": 1290, "SOLVER.WARMUP_ITERS": 100, "SOLVER.STEPS": (1000, 1200),
                 "SOLVER.CHECKPOINT_PERIOD": 129, "TEST.EVAL_PERIOD": 129,
                 "DATALOADER.FINAL_PHASE_ITERS": 0}  # no final data phase: 0 stays 0
    assert schedule_opts(v)[:4] == ["SOLVER.MAX_ITER", "1290", "SOLVER.WARMUP_ITERS", "100"]
    assert "(1000, 1200)" in schedule_opts(v)
    with pytest.raises(ValueError):
        rescaled_schedule(cfg, 0)


def test_rescaled_schedule_follows_the_key_table():
    # a key of the table that a config has is scaled; one it lacks is skipped
    cfg = load_test_cfg(RCNN_CFG)
    cfg.defrost()
    cfg.DATALOADER.FINAL_PHASE_ITERS = 30   # the close-mosaic phase of later configs (a "span")
    cfg.TEST.EVAL_PERIOD = 0                 # "never" stays never
    v = rescaled_schedule(cfg, 1290)
    assert v["DATALOADER.FINAL_PHASE_ITERS"] == round(30 * 1290 / cfg.SOLVER.MAX_ITER)
    assert v["TEST.EVAL_PERIOD"] == 0
    cfg.DATALOADER.FINAL_PHASE_ITERS = 2 * cfg.SOLVER.MAX_ITER   # longer than the run: clipped
    assert rescaled_schedule(cfg, 5)["DATALOADER.FINAL_PHASE_ITERS"] == 5
    assert rescaled_schedule(cfg, 1290, warmup_iters=7)["SOLVER.WARMUP_ITERS"] == 7
    del cfg.DATALOADER["FINAL_PHASE_ITERS"]
    assert "DATALOADER.FINAL_PHASE_ITERS" not in rescaled_schedule(cfg, 1290)
