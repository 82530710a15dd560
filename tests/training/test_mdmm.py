"""MDMM constraints: KKT points of toy problems with the Trainer, multiplier logging, checkpoint/resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bgflow_sci.training import EqualityConstraint, InequalityConstraint, Trainer, read_metrics
from bgflow_sci.training import trainer as trainer_module


class Point(nn.Module):
    def __init__(self, init=(0.0, 0.0), dtype=torch.float32):
        super().__init__()
        self.x = nn.Parameter(torch.tensor(init, dtype=dtype))


def make(kind: str, bound: float = 1.0, init_lambda: float = 0.0, dtype=torch.float32, **kwargs):
    """min |x|² s.t. x0 + x1 = 1 (equality) or min |x − (2, 2)|² s.t. x0 + x1 ≤ bound (inequality)."""
    model = Point(dtype=dtype)
    s = lambda: model.x.sum()  # noqa: E731
    if kind == "eq":
        f = lambda: (model.x**2).sum()  # noqa: E731
        con = EqualityConstraint(s, damping=1.0, lr=0.1, init=init_lambda, target=1.0)
    else:
        f = lambda: ((model.x - 2.0) ** 2).sum()  # noqa: E731
        con = InequalityConstraint(s, bound=bound, damping=1.0, lr=0.1, init=init_lambda)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    trainer = Trainer(model, {"f": f}, optimizer=opt, constraints={"c": con}, progress=False, **kwargs)
    return model, con, trainer


def test_equality_kkt_point(dtype):
    model, con, trainer = make("eq", dtype=dtype)
    history = trainer.train(600)
    torch.testing.assert_close(model.x.detach(), torch.tensor([0.5, 0.5], dtype=dtype), atol=1e-4, rtol=0)
    # stationarity 2x + λ (1, 1) = 0 -> λ = -1 in this sign convention
    assert con.multiplier.item() == pytest.approx(-1.0, abs=1e-3)
    assert con.multiplier.dtype == dtype  # follows g
    assert history[-1]["c/g"] == pytest.approx(0.0, abs=1e-4)
    assert history[-1]["c/value"] == pytest.approx(1.0, abs=1e-4)


def test_inequality_active_and_inactive(tmp_path):
    log = tmp_path / "m.jsonl"
    model, con, trainer = make("ineq", bound=1.0, log_path=log)
    trainer.train(800)
    torch.testing.assert_close(model.x.detach(), torch.tensor([0.5, 0.5]), atol=1e-3, rtol=0)
    assert con.multiplier.item() == pytest.approx(3.0, abs=1e-2)  # 2(x − 2) + λ = 0
    records = read_metrics(log)
    lam = [r["c/lambda"] for r in records]
    assert len(lam) == 800 and lam[0] == 0.0 and lam[-1] == pytest.approx(3.0, abs=1e-2)
    assert all(r["c/g"] is not None for r in records)
    assert min(lam) >= 0.0

    # inactive bound: the unconstrained optimum x = (2, 2) and λ -> 0 even from a large start
    model, con, trainer = make("ineq", bound=10.0, init_lambda=5.0)
    history = trainer.train(600)
    torch.testing.assert_close(model.x.detach(), torch.tensor([2.0, 2.0]), atol=1e-3, rtol=0)
    assert 0.0 <= con.multiplier.item() < 1e-6
    assert history[-1]["c/g"] == pytest.approx(-6.0, abs=1e-3)
    assert history[-1]["constraint/c"] == pytest.approx(0.0, abs=1e-6)  # -λ²/(2c) -> 0: no force on x


def test_inequality_term_and_gradients():
    x = torch.tensor(0.3, requires_grad=True)
    con = InequalityConstraint(lambda: 2 * x, bound=1.0, damping=2.0, lr=0.5, init=0.4)
    # g = -0.4 < -λ/c = -0.2: inactive -> term = -λ²/(2c), ∂/∂λ = -λ/c, no gradient on x
    term = con()
    term.backward()
    assert term.item() == pytest.approx(-0.04)
    assert con.multiplier.grad.item() == pytest.approx(-0.2)
    assert x.grad.item() == pytest.approx(0.0)
    con.ascend()
    assert con.multiplier.item() == pytest.approx(0.4 * (1 - 0.5 / 2.0))
    # g = +0.2: active -> term = λ g + c g²/2, ∂/∂λ = g, ∂/∂x = (λ + c g) * 2
    x.grad = None
    with torch.no_grad():
        x.fill_(0.6)
    term = con()
    term.backward()
    lam = 0.3
    assert term.item() == pytest.approx(lam * 0.2 + 0.5 * 2.0 * 0.04)
    assert con.multiplier.grad.item() == pytest.approx(0.2)
    assert x.grad.item() == pytest.approx((lam + 2.0 * 0.2) * 2)


def test_resume_keeps_multiplier(tmp_path):
    _, ref_con, ref = make("ineq", bound=1.0)
    ref.train(60)

    model, con, trainer = make("ineq", bound=1.0)
    trainer.train(30)
    trainer.save_checkpoint(tmp_path / "ckpt.pt")
    lam_saved = con.multiplier.item()
    assert lam_saved > 0

    model2, con2, trainer2 = make("ineq", bound=1.0)
    assert con2.multiplier.item() == 0.0
    trainer2.load_checkpoint(tmp_path / "ckpt.pt")
    assert con2.multiplier.item() == lam_saved
    trainer2.train(30)
    assert con2.multiplier.item() == ref_con.multiplier.item()
    assert [h["c/lambda"] for h in trainer2.history] == [h["c/lambda"] for h in ref.history]


def test_constraint_module_hygiene():
    net = nn.Linear(2, 1)
    loss_module = lambda: net.weight.sum()  # noqa: E731
    con = EqualityConstraint(net, damping=1.0)  # an nn.Module as fn must not become a submodule
    assert [n for n, _ in con.named_parameters()] == ["multiplier"]
    assert set(con.state_dict()) == {"multiplier"}
    con2 = EqualityConstraint(loss_module)
    assert len(list(con2.parameters())) == 1
    assert isinstance(con, trainer_module.Constraint)
    assert trainer_module.EqualityConstraint is EqualityConstraint
    with pytest.raises(ValueError, match="lr <= damping"):
        InequalityConstraint(loss_module, bound=0.0, damping=0.1, lr=1.0)
    with pytest.raises(ValueError, match="damping > 0"):
        InequalityConstraint(loss_module, bound=0.0, damping=0.0)
    with pytest.raises(ValueError, match="scalar"):
        EqualityConstraint(lambda: torch.zeros(3))()
