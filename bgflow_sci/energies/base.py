"""The Energy protocol: dimensionless reduced energies ``u(x)`` in units of kT, and their forces.

:meth:`Energy.energy_and_force` is the one place where a force is obtained from an energy by autograd; every sampler,
integrator, stochastic flow layer and loss asks an :class:`Energy` for its forces, and anything else that has an
energy (a :class:`~bgflow_sci.distributions.Distribution`, whose ``energy`` is ``-log p``, or a plain function) is
wrapped by :func:`as_energy` first.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .._checks import check_batch, finite_rows

EnergyLike = Callable[[Tensor], Tensor]


class Energy(nn.Module):
    """Reduced energy ``u(x) = U(x) / kT`` of flat configurations ``x`` of shape ``(batch, dim)``.

    Subclasses implement ``_energy(x) -> (batch,)`` for finite input.  The public :meth:`energy` validates the shape
    and maps invalid configurations (non-finite coordinates, or a NaN energy) to ``+inf`` — never an exception and
    never a silent finite number.  Such rows are counted in ``n_invalid`` (a tensor kept on the device of the last
    evaluation, so that counting does not synchronise a GPU).

    Forces ``F = -du/dx`` come from :meth:`energy_and_force`, by one autograd pass through :meth:`energy` in this base
    class; a subclass with analytic forces (:class:`~bgflow_sci.energies.TorchForceField`,
    :class:`~bgflow_sci.energies.OpenMMEnergy`) overrides :meth:`energy_and_force` and nothing else. :meth:`force` is
    its second output.
    """

    dim: int

    def __init__(self, dim: int):
        super().__init__()
        if int(dim) != dim or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim}")
        self.dim = int(dim)
        self.register_buffer("n_invalid", torch.zeros((), dtype=torch.long), persistent=False)

    def _energy(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _count_invalid(self, bad: Tensor) -> None:
        """Add the number of ``True`` rows of ``bad`` to ``n_invalid`` (moving the counter to their device once)."""
        if self.n_invalid.device != bad.device:
            with torch.inference_mode(False):  # a normal tensor, updatable in and out of inference mode
                self.n_invalid = self.n_invalid.to(bad.device)
        self.n_invalid += bad.sum()

    def energy(self, x: Tensor) -> Tensor:
        """Reduced energies ``(batch,)`` in kT; ``+inf`` for invalid rows (non-finite ``x`` or NaN energy)."""
        check_batch(x, self.dim)
        valid = finite_rows(x)
        x_safe = torch.where(valid[:, None], x, torch.zeros_like(x))
        u = self._energy(x_safe)
        ok = valid & ~torch.isnan(u)
        self._count_invalid(~ok)
        return torch.where(ok, u, torch.full_like(u, torch.inf))

    def forward(self, x: Tensor) -> Tensor:
        return self.energy(x)

    def energy_and_force(self, x: Tensor, create_graph: bool = False) -> tuple[Tensor, Tensor]:
        """``u(x)`` ``(batch,)`` in kT and ``F = -du/dx`` ``(batch, dim)`` in kT per coordinate unit, in one pass.

        Rows whose energy is not finite (invalid configurations: ``+inf``) get zero force. Without ``create_graph``
        both outputs are constants (detached from ``x`` and from the energy's parameters). With ``create_graph`` the
        force stays differentiable — with respect to the energy's parameters, and with respect to ``x`` when ``x``
        itself requires grad — so that a reparametrised trajectory can be backpropagated (the Langevin blocks of
        stochastic normalizing flows); the energy is then returned with its graph as well.
        """
        check_batch(x, self.dim)
        with torch.enable_grad():
            x_ = x if (create_graph and x.requires_grad) else x.detach().requires_grad_(True)
            u = self.energy(x_)
            finite = torch.isfinite(u)
            grad = None
            if u.requires_grad:
                (grad,) = torch.autograd.grad(
                    torch.where(finite, u, torch.zeros_like(u)).sum(), x_, create_graph=create_graph, allow_unused=True
                )
        if grad is None:  # an energy that does not depend on x
            grad = torch.zeros_like(x)
        force = torch.where(finite[:, None], -grad, torch.zeros_like(grad))
        return (u, force) if create_graph else (u.detach(), force.detach())

    def force(self, x: Tensor, create_graph: bool = False) -> Tensor:
        """``F = -du/dx`` ``(batch, dim)`` in kT per coordinate unit; zero for invalid rows (see
        :meth:`energy_and_force`, of which it is the second output)."""
        return self.energy_and_force(x, create_graph)[1]

    def reset_invalid_count(self) -> int:
        """Return and reset the number of invalid configurations seen so far."""
        n = int(self.n_invalid)
        self.n_invalid.zero_()
        return n


class FunctionEnergy(Energy):
    """An :class:`Energy` around a callable ``fn(x) -> (batch,)`` (kT), e.g. a Distribution's ``energy = -log p``.

    It adds the protocol to the function: shape checks, ``+inf`` for invalid rows and forces by
    :meth:`Energy.energy_and_force`. A callable that is an ``nn.Module``, and an ``owner`` module (the Distribution
    whose ``energy`` ``fn`` is, as :func:`as_energy` passes it), are registered as submodules, so they move with
    ``.to()``; a bare bound method (``prior.energy``) is a plain attribute, and its object is moved by whoever owns it.
    """

    def __init__(self, fn: EnergyLike, dim: int, owner: nn.Module | None = None):
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        super().__init__(dim)
        self.fn = fn
        if owner is not None:
            self.owner = owner

    def _energy(self, x: Tensor) -> Tensor:
        u = self.fn(x)
        if u.shape != x.shape[:1]:
            raise ValueError(f"the energy function must return shape ({len(x)},), got {tuple(u.shape)}")
        return u

    def extra_repr(self) -> str:
        return f"dim={self.dim}, fn={getattr(self.fn, '__qualname__', type(self.fn).__name__)}"


def infer_dim(obj: object) -> int | None:
    """The dimension an energy-like object declares: its integer ``dim`` (an Energy, a Distribution), or that of the
    object a bound method belongs to (``prior.energy``); ``None`` for a plain function."""
    for candidate in (obj, getattr(obj, "__self__", None)):
        dim = getattr(candidate, "dim", None)
        if isinstance(dim, int) and not isinstance(dim, bool):
            return dim
    return None


def as_energy(obj: Energy | EnergyLike | object, dim: int | None = None) -> Energy:
    """``obj`` as an :class:`Energy` of dimension ``dim``.

    * an :class:`Energy` is returned as it is;
    * an object with ``energy(x)`` and an integer ``dim`` (a :class:`~bgflow_sci.distributions.Distribution`, whose
      ``energy`` is ``-log p``, or a Boltzmann generator as a proposal density) is wrapped as
      ``FunctionEnergy(obj.energy, obj.dim)``, owning ``obj`` (it moves with the energy's ``.to()``);
    * a callable ``x -> (batch,)`` is wrapped as ``FunctionEnergy(obj, dim)``; ``dim`` may be left out for a bound
      method of an object that has one (``prior.energy``).

    ``dim``, when given, must agree with the object's own (``ValueError``); ``TypeError`` for anything else.
    """
    own = infer_dim(obj)
    if isinstance(obj, Energy):
        energy = obj
    elif callable(getattr(obj, "energy", None)) and own is not None:
        energy = FunctionEnergy(obj.energy, own, owner=obj if isinstance(obj, nn.Module) else None)
    elif callable(obj):
        if dim is None and own is None:
            raise ValueError(f"the dimension of {getattr(obj, '__qualname__', obj)!r} is unknown: pass dim")
        energy = FunctionEnergy(obj, own if own is not None else dim)
    else:
        raise TypeError(
            f"expected an Energy, something with energy(x) and dim, or a function, got {type(obj).__name__}"
        )
    if dim is not None and energy.dim != dim:
        raise ValueError(f"the energy has dim {energy.dim}, expected {dim}")
    return energy


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
