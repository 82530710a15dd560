"""The Energy protocol: dimensionless reduced energies ``u(x)`` in units of kT."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .._checks import check_batch, finite_rows


class Energy(nn.Module):
    """Reduced energy ``u(x) = U(x) / kT`` of flat configurations ``x`` of shape ``(batch, dim)``.

    Subclasses implement ``_energy(x) -> (batch,)`` for finite input.  The public :meth:`energy`
    validates the shape and maps invalid configurations (non-finite coordinates, or a NaN energy)
    to ``+inf`` — never an exception and never a silent finite number.  Such rows are counted in
    ``n_invalid`` (a tensor, so that counting does not synchronise a GPU).  ``force(x) = -du/dx``
    comes from autograd unless a subclass provides an analytic ``_force``.
    """

    dim: int

    def __init__(self, dim: int):
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = dim
        self.register_buffer("n_invalid", torch.zeros((), dtype=torch.long), persistent=False)

    def _energy(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def energy(self, x: Tensor) -> Tensor:
        """Reduced energies ``(batch,)``; ``+inf`` for invalid rows."""
        check_batch(x, self.dim)
        valid = finite_rows(x)
        x_safe = torch.where(valid[:, None], x, torch.zeros_like(x))
        u = self._energy(x_safe)
        ok = valid & ~torch.isnan(u)
        self.n_invalid += (~ok).sum().to(self.n_invalid.device)
        return torch.where(ok, u, torch.full_like(u, torch.inf))

    def forward(self, x: Tensor) -> Tensor:
        return self.energy(x)

    def force(self, x: Tensor, create_graph: bool = False) -> Tensor:
        """``-du/dx`` of shape ``(batch, dim)`` in kT per coordinate unit; zero for invalid rows."""
        check_batch(x, self.dim)
        with torch.enable_grad():
            x_ = x if (create_graph and x.requires_grad) else x.detach().requires_grad_(True)
            u = self.energy(x_)
            finite = torch.isfinite(u)
            (grad,) = torch.autograd.grad(
                torch.where(finite, u, torch.zeros_like(u)).sum(), x_, create_graph=create_graph, allow_unused=True
            )
        if grad is None:
            grad = torch.zeros_like(x)
        return torch.where(finite[:, None], -grad, torch.zeros_like(grad))

    def reset_invalid_count(self) -> int:
        """Return and reset the number of invalid configurations seen so far."""
        n = int(self.n_invalid)
        self.n_invalid.zero_()
        return n


class ScaledEnergy(Energy):
    """``u(x) / T``: an energy seen at a relative temperature ``T`` (reduced units of the wrapped energy)."""

    def __init__(self, energy: Energy, temperature: float):
        super().__init__(energy.dim)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.base, self.temperature = energy, float(temperature)

    def _energy(self, x: Tensor) -> Tensor:
        return self.base.energy(x) / self.temperature


class BiasedEnergy(Energy):
    """``u_b(x) = u(x) + b(x)`` (kT): a known bias added to an energy, for *training* only.

    Reverse KL against ``u_b`` shapes a flow where ``b`` lowers the energy (e.g. a rare metastable basin lifted to
    a few per cent of the samples, so that every batch fits it); importance weights must keep the exact ``u``
    (the :class:`~bgflow_sci.BoltzmannGenerator`'s target), so no estimate is biased. ``bias`` maps ``(batch, dim)``
    to ``(batch,)`` in kT and must be differentiable for forces.
    """

    def __init__(self, energy: Energy, bias: Callable[[Tensor], Tensor]):
        super().__init__(energy.dim)
        self.base, self.bias = energy, bias

    def _energy(self, x: Tensor) -> Tensor:
        b = self.bias(x)
        if b.shape != x.shape[:1]:
            raise ValueError(f"bias must return shape ({len(x)},), got {tuple(b.shape)}")
        return self.base.energy(x) + b
