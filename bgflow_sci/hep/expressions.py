"""Derived observables: arithmetic expressions over named event variables, parsed safely, evaluated in torch.

A derived observable is ``NAME=EXPR`` (``morph train --derive``), e.g. the dimuon mass from the muons' ``pt``,
``eta``, ``phi`` (massless muons):

    mass=sqrt(2 * pt1 * pt2 * (cosh(eta1 - eta2) - cos(phi1 - phi2)))

``EXPR`` is read by Python's parser (:func:`ast.parse`) and only this grammar is accepted, anything else is refused
with the offending piece named (the text is never executed):

* numbers, ``pi``, ``e`` and the variable names the caller allows;
* ``+ - * / **``, unary ``-`` / ``+``, parentheses;
* one-argument functions ``sqrt exp log sin cos tan sinh cosh tanh abs`` and two-argument ``atan2(y, x)``,
  ``hypot(x, y)``, ``min(a, b)``, ``max(a, b)``.

:class:`Expression` evaluates the tree on a mapping ``{name: values}`` (torch tensors, numpy arrays or numbers) with
torch operations, so a derived observable of the flow's output is differentiable (used in the MDMM constraint) and
the same code gives the numbers written to files.  Angles in radians.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..energies.forcefield.expressions import FUNCTIONS

__all__ = ["Expression", "parse_derived", "derived_feature_fn"]

_BINARY: dict[type, Callable[[Tensor, Tensor], Tensor]] = {
    ast.Add: torch.add,
    ast.Sub: torch.sub,
    ast.Mult: torch.mul,
    ast.Div: torch.div,
    ast.Pow: torch.pow,
}
_UNARY: dict[type, Callable[[Tensor], Tensor]] = {ast.USub: torch.neg, ast.UAdd: lambda x: x}
# the force-field expression compiler's function table (one set of torch implementations), restricted to these
_FUNCTIONS: dict[str, tuple[int, Callable[..., Tensor]]] = {
    **{k: FUNCTIONS[k] for k in ("sqrt", "exp", "log", "sin", "cos", "tan", "sinh", "cosh", "tanh", "abs")},
    **{k: FUNCTIONS[k] for k in ("atan2", "min", "max")},
    "hypot": (2, torch.hypot),
}
_CONSTANTS = {"pi": math.pi, "e": math.e}


class Expression:
    """An arithmetic expression of named variables (module docstring): ``Expression("sqrt(x**2 + y**2)")``.

    ``names``: the variables it may use (``None``: any name); ``.variables`` lists those it uses, in order of first
    appearance.  ``expr(values)`` evaluates it on ``values`` ``{name: (n,) array}`` and returns a tensor ``(n,)``
    (float64 unless every input is a float32 tensor; on the inputs' device).
    """

    def __init__(self, text: str, names: Sequence[str] | None = None, what: str = "expression"):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{what}: empty expression")
        self.text = text.strip()
        self._what = what
        try:
            tree = ast.parse(self.text, mode="eval")
        except SyntaxError as err:
            raise ValueError(f"{what} {self.text!r} is not a valid expression: {err.msg}") from None
        self._allowed = None if names is None else set(names)
        self.variables: list[str] = []
        self._root = self._check(tree.body)

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"

    # validation: a tree of the accepted node types only, variables resolved
    def _check(self, node: ast.AST) -> ast.AST:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise ValueError(
                    f"{self._what} {self.text!r}: only numbers are allowed as constants, got {node.value!r}"
                )
        elif isinstance(node, ast.Name):
            variable = node.id in self._allowed if self._allowed is not None else node.id not in _CONSTANTS
            if variable:
                if node.id not in self.variables:
                    self.variables.append(node.id)
            elif node.id not in _CONSTANTS:
                known = ", ".join(sorted(self._allowed or ()))
                raise ValueError(
                    f"{self._what} {self.text!r} uses {node.id!r}, which is not a variable here (known: {known})"
                )
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            self._check(node.left)
            self._check(node.right)
        elif isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            self._check(node.operand)
        elif isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else None
            if name not in _FUNCTIONS or node.keywords:
                shown = ast.unparse(node.func)
                raise ValueError(
                    f"{self._what} {self.text!r}: {shown!r} is not an allowed function "
                    f"({', '.join(sorted(_FUNCTIONS))})"
                )
            arity = _FUNCTIONS[name][0]
            if len(node.args) != arity:
                raise ValueError(
                    f"{self._what} {self.text!r}: {name}() takes {arity} argument(s), got {len(node.args)}"
                )
            for arg in node.args:
                self._check(arg)
        else:
            raise ValueError(
                f"{self._what} {self.text!r}: {ast.unparse(node)!r} is not allowed (numbers, variables, + - * / **, "
                f"and the functions {', '.join(sorted(_FUNCTIONS))})"
            )
        return node

    def __call__(self, values: Mapping[str, Any]) -> Tensor:
        tensors = {}
        for name in self.variables:
            if name not in values:
                raise ValueError(f"{self._what} {self.text!r} needs {name!r}, which is not given ({sorted(values)})")
            v = values[name]
            tensors[name] = v if isinstance(v, Tensor) else torch.as_tensor(np.asarray(v, dtype=np.float64))
        floats = [t for t in tensors.values() if t.is_floating_point()]
        dtype = torch.float32 if floats and all(t.dtype == torch.float32 for t in floats) else torch.float64
        device = next(iter(tensors.values())).device if tensors else torch.device("cpu")
        tensors = {k: t.to(device=device, dtype=dtype) for k, t in tensors.items()}
        out = self._eval(self._root, tensors, dtype, device)
        if out.dim() == 0 and values:  # a constant: one value per event of the given variables
            first = next(iter(values.values()))
            out = out.expand(len(first) if hasattr(first, "__len__") else ())
        return out

    def _eval(self, node: ast.AST, env: dict[str, Tensor], dtype: torch.dtype, device: torch.device) -> Tensor:
        if isinstance(node, ast.Constant):
            return torch.tensor(float(node.value), dtype=dtype, device=device)
        if isinstance(node, ast.Name):
            if node.id in env:
                return env[node.id]
            return torch.tensor(_CONSTANTS[node.id], dtype=dtype, device=device)
        if isinstance(node, ast.BinOp):
            return _BINARY[type(node.op)](
                self._eval(node.left, env, dtype, device), self._eval(node.right, env, dtype, device)
            )
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](self._eval(node.operand, env, dtype, device))
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        return _FUNCTIONS[node.func.id][1](*(self._eval(a, env, dtype, device) for a in node.args))


def parse_derived(specs: Sequence[str] | Mapping[str, str] | None, names: Sequence[str]) -> dict[str, Expression]:
    """``["mass=sqrt(...)", ...]`` (or ``{name: text}``) -> ``{name: Expression}`` over the variables ``names``.

    A derived name must be a new identifier (not one of ``names``, not repeated, not a function or constant name)."""
    items = list(specs.items()) if isinstance(specs, Mapping) else []
    for spec in [] if isinstance(specs, Mapping) else list(specs or []):
        name, sep, text = spec.partition("=")
        if not sep or not name.strip() or not text.strip():
            raise ValueError(
                f"--derive entry {spec!r} must be NAME=EXPR, e.g. mass='sqrt(2*pt1*pt2*(cosh(eta1-eta2)-1))'"
            )
        items.append((name.strip(), text))
    out: dict[str, Expression] = {}
    for name, text in items:
        if not name.isidentifier() or name in _FUNCTIONS or name in _CONSTANTS:
            raise ValueError(f"--derive name {name!r} must be a plain identifier, not a function or constant name")
        if name in names:
            raise ValueError(f"--derive name {name!r} is already a variable; choose a new name")
        if name in out:
            raise ValueError(f"--derive name {name!r} is given twice")
        out[name] = Expression(text, names, what=f"--derive {name}")
    return out


def derived_feature_fn(
    derived: Mapping[str, Expression], names: Sequence[str], context_names: Sequence[str] = ()
) -> Callable[[Tensor, Tensor | None], Tensor]:
    """``F(x, c) -> (n, k)``: the ``k`` derived observables of physical variables ``x`` ``(n, len(names))`` and
    context ``c`` ``(n, len(context_names))`` (the :data:`~bgflow_sci.hep.morphing.FeatureFn` of the MDMM
    constraint), differentiable in ``x``."""
    names, context_names = list(names), list(context_names)
    expressions = list(derived.values())

    def features(x: Tensor, c: Tensor | None) -> Tensor:
        values = {n: x[:, i] for i, n in enumerate(names)}
        if c is not None:
            values.update({n: c[:, i] for i, n in enumerate(context_names)})
        return torch.stack([e(values).to(x) for e in expressions], dim=1)

    return features
