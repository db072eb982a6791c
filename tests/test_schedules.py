import math

import pytest
import torch

from lightcycle.schedules import SGDR, Constant, OneCycle, ScheduleLR, build_schedule, cosine_anneal, fit_cycles


def test_cosine_anneal_endpoints_and_midpoint():
    assert cosine_anneal(1.0, 0.0, 0.0) == 1.0
    assert cosine_anneal(1.0, 0.0, 1.0) == pytest.approx(0.0)
    assert cosine_anneal(1.0, 0.0, 0.5) == pytest.approx(0.5)


def test_one_cycle_closed_form_values():
    s = OneCycle(total_steps=100)  # fastai defaults: pct_start 0.25, div 25, div_final 1e5
    assert s.lr(0) == pytest.approx(1 / 25)
    assert s.lr(25) == pytest.approx(1.0)
    assert s.lr(100) == pytest.approx(1e-5)
    # half-way through warm-up: mean of start and peak (cosine)
    assert s.lr(12.5) == pytest.approx((1 / 25 + 1) / 2)
    # half-way through annealing
    assert s.lr(62.5) == pytest.approx((1 + 1e-5) / 2)
    assert s.momentum(0) == pytest.approx(0.95)
    assert s.momentum(25) == pytest.approx(0.85)
    assert s.momentum(100) == pytest.approx(0.95)


def test_sgdr_cycles_restart_and_total_epochs():
    s = SGDR(steps_per_epoch=10, cycle_len=1, cycle_mult=2, n_cycles=3)
    assert s.cycle_epochs() == [1, 2, 4]
    assert s.total_epochs == 7
    assert s.restart_epochs() == [1, 3]
    assert s.cycle_end_steps() == [9, 29, 69]
    assert s.lr(0) == 1.0 and s.lr(10) == 1.0 and s.lr(30) == 1.0  # restarts
    assert s.lr(5) == pytest.approx(cosine_anneal(1, 0, 0.5))
    assert s.lr(20) == pytest.approx(0.5)  # middle of the 20-step second cycle
    assert s.momentum(3) is None


def test_sgdr_cycle_mult_one_and_warmup():
    s = SGDR(steps_per_epoch=4, cycle_len=2, cycle_mult=1, n_cycles=2, lr_min=0.1, warmup_steps=2)
    assert s.total_epochs == 4
    assert s.lr(0) == pytest.approx(0.5) and s.lr(1) == pytest.approx(1.0)
    assert s.lr(8) == 1.0  # second cycle starts at the peak, no warmup
    assert s.lr(4) == pytest.approx(cosine_anneal(1, 0.1, 0.5))


def test_invalid_schedules_fail_clearly():
    with pytest.raises(ValueError, match="total_steps"):
        OneCycle(total_steps=0)
    with pytest.raises(ValueError, match="SGDR"):
        SGDR(steps_per_epoch=1, cycle_len=0)
    with pytest.raises(ValueError, match="schedule.name"):
        build_schedule({"name": "nope"}, 10, 1)
    assert isinstance(build_schedule({"name": "constant"}, 10, 1), Constant)


def test_schedule_lr_drives_every_group_and_beta1():
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [p1], "lr": 1.0}, {"params": [p2], "lr": 0.1}])
    sched = ScheduleLR(opt, OneCycle(total_steps=8))
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1 / 25, 0.1 / 25])
    assert opt.param_groups[0]["betas"][0] == pytest.approx(0.95)
    for _ in range(2):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1.0, 0.1])
    assert opt.param_groups[1]["betas"][0] == pytest.approx(0.85)
    # state round-trips without the schedule object (checkpoints hold plain data)
    state = sched.state_dict()
    assert "schedule" not in state and state["last_epoch"] == 2
    assert not math.isnan(opt.param_groups[0]["lr"])


@pytest.mark.parametrize("epochs, mult, most, cycles", [
    (6, 2, 3, [2, 4]), (7, 2, 3, [1, 2, 4]), (14, 2, 3, [2, 4, 8]), (8, 2, 3, [1, 2, 5]), (4, 2, 3, [1, 3]),
    (1, 2, 3, [1]), (7, 2, 2, [1, 6]), (6, 1, 3, [2, 2, 2]), (5, 1, 2, [1, 4]),
])
def test_fit_cycles_fills_the_budget_exactly_with_as_many_cycles_as_fit(epochs, mult, most, cycles):
    assert fit_cycles(epochs, mult, most) == cycles


def test_sgdr_with_an_epoch_budget_restarts_and_ends_where_its_fitted_cycles_do():
    s = SGDR(steps_per_epoch=10, cycle_len=5, cycle_mult=2, n_cycles=3, epochs=6)  # cycle_len ignored
    assert s.cycle_epochs() == [2, 4] and s.total_epochs == 6 and s.total_steps == 60
    assert s.restart_epochs() == [2] and s.cycle_end_steps() == [19, 59]
    assert s.lr(0) == 1.0 and s.lr(20) == 1.0 and s.lr(19) < 0.01 and s.lr(59) < 0.01
    with pytest.raises(ValueError, match="epochs >= 1"):
        SGDR(steps_per_epoch=1, epochs=0)
