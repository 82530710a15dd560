"""PhysicsPreprocessor: exact round trips, spike dequantisation, Jacobian vs autograd, errors, state_dict."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bgflow_sci.hep.preprocessing import PhysicsPreprocessor
from bgflow_sci.hep.synthetic import generate, photon_table

NAMES = ["pt", "eta", "phi", "r9", "sieie", "iso"]
KINDS = ["log", "identity", "identity", "logit", "log", "spike"]


@pytest.fixture(scope="module")
def photons():
    return photon_table(generate(5000, "mc", 0), NAMES)


def test_round_trip_and_standardisation(photons):
    pre = PhysicsPreprocessor(KINDS, names=NAMES).fit(photons)
    y = pre(photons)
    assert isinstance(y, np.ndarray) and y.shape == photons.shape and np.isfinite(y).all()
    np.testing.assert_allclose(y.mean(0), 0.0, atol=0.05)  # fitted with another dequantisation draw
    np.testing.assert_allclose(y.std(0), 1.0, atol=0.05)
    back = pre.inverse(y)
    np.testing.assert_allclose(back, photons, rtol=1e-12, atol=1e-15)
    iso = photons[:, 5]
    assert np.array_equal(back[:, 5] == 0, iso == 0)  # the spike returns exactly to 0


def test_spike_dequantisation_width(photons):
    rng = np.random.default_rng(0)
    n, p0, mean = 40000, 0.4, 2.0
    iso = np.where(rng.random(n) < p0, 0.0, rng.exponential(mean, n))
    pre = PhysicsPreprocessor(["spike"]).fit(iso[:, None])
    delta = pre.delta[0].item()
    p0_hat = np.mean(iso == 0)
    assert delta == pytest.approx(p0_hat * iso[iso > 0].mean() / (1 - p0_hat), rel=1e-9)
    raw = pre(iso[:, None])[:, 0] * pre.std[0].item() + pre.mean[0].item()  # undo standardisation
    zeros = iso == 0
    assert np.all((raw[zeros] >= -delta - 1e-12) & (raw[zeros] < 0))
    np.testing.assert_allclose(raw[~zeros], iso[~zeros], rtol=1e-12, atol=1e-12)
    # continuous density at 0: height below (uniform) == height just above (exponential)
    below = zeros.mean() / delta
    above = np.mean((iso > 0) & (iso < 0.2)) / 0.2
    assert below == pytest.approx(above, rel=0.1)


def test_log_det_against_autograd(dtype, device):
    rng = np.random.default_rng(1)
    x = np.c_[rng.exponential(30, 50) + 20, rng.normal(size=50), rng.uniform(0.5, 0.99, 50)]
    pre = PhysicsPreprocessor(["log", "identity", ("logit", 0.0, 1.0)]).fit(x).to(device)
    xt = torch.tensor(x, dtype=dtype, device=device)
    y = pre(xt)
    assert y.dtype == dtype and y.device == xt.device
    x0 = torch.tensor(x[0], dtype=torch.float64, device=device)
    jac = torch.autograd.functional.jacobian(lambda r: pre(r[None])[0], x0)
    ref = torch.linalg.slogdet(jac)[1]
    ld = pre.log_abs_det_jacobian(torch.tensor(x[:1], device=device))
    torch.testing.assert_close(ld.cpu(), ref[None].cpu())
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(pre.inverse(y).cpu(), xt.cpu(), atol=tol, rtol=tol)


def test_state_dict_and_errors(photons, device):
    pre = PhysicsPreprocessor(KINDS, names=NAMES).fit(photons).to(device)
    fresh = PhysicsPreprocessor(KINDS, names=NAMES).to(device)
    with pytest.raises(RuntimeError, match="fitted"):
        fresh(photons)
    fresh.load_state_dict(pre.state_dict())
    g = torch.Generator().manual_seed(0)  # dequantisation draws on the CPU, moved to the data's device
    p = torch.tensor(photons, device=device)
    torch.testing.assert_close(fresh(p, generator=g).cpu(), pre(p, generator=g.manual_seed(0)).cpu())
    bad = photons.copy()
    bad[3, 0] = -1.0
    with pytest.raises(ValueError, match="column 'pt': 'log' needs x > 0"):
        PhysicsPreprocessor(KINDS, names=NAMES).fit(bad)
    with pytest.raises(ValueError, match=r"shape \(batch, 6\)"):
        pre(photons[:, :5])
    nan = photons.copy()
    nan[:, 4] = np.nan
    with pytest.raises(ValueError, match="'sieie' is all NaN"):
        PhysicsPreprocessor(KINDS, names=NAMES).fit(nan)
    with pytest.raises(ValueError, match="unknown preprocessing kind"):
        PhysicsPreprocessor(["sqrt"])


def test_spike_asinh_tail_round_trip_and_jacobian(device):
    """``spike_asinh``: exponential tail -> asinh(x/m) (inside a spline range), spike dequantised below 0 in t,
    exact round trip, Jacobian of the continuous part against autograd."""
    rng = np.random.default_rng(2)
    n, p0, mean = 40000, 0.4, 2.0
    iso = np.where(rng.random(n) < p0, 0.0, rng.exponential(mean, n))
    pre = PhysicsPreprocessor(["spike_asinh"]).fit(iso[:, None])
    m, delta, zeros = pre.b[0].item(), pre.delta[0].item(), iso == 0
    assert m == pytest.approx(iso[~zeros].mean(), rel=1e-9)
    assert delta == pytest.approx(zeros.mean() / (1 - zeros.mean()), rel=1e-9)
    y = pre(iso[:, None])
    t = y[:, 0] * pre.std[0].item() + pre.mean[0].item()
    assert np.all((t[zeros] >= -delta - 1e-12) & (t[zeros] < 0))
    np.testing.assert_allclose(t[~zeros], np.arcsinh(iso[~zeros] / m), rtol=1e-12)
    # continuous density at t = 0: uniform spike height == exponential height (1 − π₀) (dx/dt = m at 0)
    above = np.mean(~zeros & (t < 0.1)) / 0.1
    assert zeros.mean() / delta == pytest.approx(above, rel=0.1)
    # the tail stays within a few σ, unlike the linear spike (the cause of the flow-ratio outliers, issue 6)
    assert np.abs(y).max() < 5.0
    assert PhysicsPreprocessor(["spike"]).fit(iso[:, None])(iso[:, None]).max() > 7.0
    back = pre.inverse(y)
    np.testing.assert_allclose(back[:, 0], iso, rtol=1e-12, atol=1e-12)
    assert np.array_equal(back[:, 0] == 0, zeros)
    pre = pre.to(device)
    xt = torch.tensor([[0.0], [0.3], [7.5]], dtype=torch.float64, device=device)
    ref = [-np.log(pre.std[0].item())] + [  # spike row: only the standardisation
        torch.log(torch.autograd.functional.jacobian(lambda r: pre(r[None])[0], xt[i]).abs()).item() for i in (1, 2)
    ]
    torch.testing.assert_close(pre.log_abs_det_jacobian(xt).cpu(), torch.tensor(ref, dtype=torch.float64))
    with pytest.raises(ValueError, match="'spike' at 0.0 needs x >= 0.0"):
        PhysicsPreprocessor(["spike_asinh"]).fit(np.array([[0.0], [-1.0], [2.0]]))
