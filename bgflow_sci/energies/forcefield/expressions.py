"""A small compiler for OpenMM's (Lepton) energy-expression language into batched torch closures.

Syntax: ``expr; name = expr; name = expr ...`` where the later ``name = expr`` parts define variables used by
earlier parts (and by each other, in any order, without cycles).  Operators ``+ - * / ^`` with the usual
precedence, ``^`` right-associative and binding tighter than unary minus (``-x^2 = -(x^2)``), numbers such as
``1``, ``0.5``, ``1e-3``.  Functions: ``sqrt exp log sin cos tan asin acos atan atan2 sinh cosh tanh erf erfc
step delta select min max abs floor ceil square cube recip`` with Lepton's semantics (``step(x) = 1`` for
``x >= 0``, ``delta(x) = 1`` for ``x == 0``, ``select(x, a, b) = a`` if ``x != 0`` else ``b``), plus named
tabulated functions supplied by the caller.  Nothing is ``eval``-ed: the text is tokenised, parsed by recursive
descent into a tree and the tree is turned into nested Python closures over torch operations.

A compiled expression is called with a ``dict`` from variable name to tensor (all broadcastable) and returns a
tensor; free variables are checked at compile time against the allowed names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor

Env = Mapping[str, Tensor]
Compiled = Callable[[Env], Tensor]

_TOKEN = re.compile(r"\s*(?:(\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)|([A-Za-z_][A-Za-z0-9_]*)|(.))")


def _step(x: Tensor) -> Tensor:
    return (x >= 0).to(x.dtype)


def _delta(x: Tensor) -> Tensor:
    return (x == 0).to(x.dtype)


def _select(x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    x, a, b = torch.broadcast_tensors(x, a, b)
    return torch.where(x != 0, a, b)


FUNCTIONS: dict[str, tuple[int, Callable[..., Tensor]]] = {
    "sqrt": (1, torch.sqrt),
    "exp": (1, torch.exp),
    "log": (1, torch.log),
    "sin": (1, torch.sin),
    "cos": (1, torch.cos),
    "tan": (1, torch.tan),
    "asin": (1, torch.asin),
    "acos": (1, torch.acos),
    "atan": (1, torch.atan),
    "atan2": (2, torch.atan2),
    "sinh": (1, torch.sinh),
    "cosh": (1, torch.cosh),
    "tanh": (1, torch.tanh),
    "erf": (1, torch.erf),
    "erfc": (1, torch.erfc),
    "step": (1, _step),
    "delta": (1, _delta),
    "select": (3, _select),
    "min": (2, torch.minimum),
    "max": (2, torch.maximum),
    "abs": (1, torch.abs),
    "floor": (1, torch.floor),
    "ceil": (1, torch.ceil),
    "square": (1, lambda x: x * x),
    "cube": (1, lambda x: x * x * x),
    "recip": (1, torch.reciprocal),
}


class _Parser:
    """Recursive descent: sum := product (('+'|'-') product)*; product := unary (('*'|'/') unary)*;
    unary := '-' unary | power; power := atom ('^' unary)?; atom := number | name | name '(' args ')' | '(' sum ')'."""

    def __init__(self, text: str):
        self.text = text
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        text = text.rstrip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                break
            pos = m.end()
            num, name, other = m.groups()
            if num is not None:
                self.tokens.append(("num", num))
            elif name is not None:
                self.tokens.append(("name", name))
            elif other is not None and other.strip():
                if other not in "+-*/^(),":
                    raise ValueError(f"unexpected character {other!r} in expression {self.text!r}")
                self.tokens.append(("op", other))
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            want = repr(value) if value else "a token"
            raise ValueError(f"expected {want} at token {self.i} in expression {self.text!r}")
        self.i += 1
        return tok

    def parse(self):
        if not self.tokens:
            raise ValueError(f"empty expression {self.text!r}")
        tree = self.sum()
        if self.peek() is not None:
            raise ValueError(f"unexpected {self.peek()[1]!r} in expression {self.text!r}")
        return tree

    def sum(self):
        left = self.product()
        while (tok := self.peek()) is not None and tok[1] in ("+", "-"):
            self.i += 1
            left = ("op", tok[1], left, self.product())
        return left

    def product(self):
        left = self.unary()
        while (tok := self.peek()) is not None and tok[1] in ("*", "/"):
            self.i += 1
            left = ("op", tok[1], left, self.unary())
        return left

    def unary(self):
        tok = self.peek()
        if tok is not None and tok == ("op", "-"):
            self.i += 1
            return ("neg", self.unary())
        return self.power()

    def power(self):
        base = self.atom()
        tok = self.peek()
        if tok is not None and tok == ("op", "^"):
            self.i += 1
            return ("op", "^", base, self.unary())
        return base

    def atom(self):
        kind, value = self.take()
        if kind == "num":
            return ("num", float(value))
        if kind == "name":
            tok = self.peek()
            if tok is not None and tok == ("op", "("):
                self.i += 1
                args = [self.sum()]
                while self.peek() == ("op", ","):
                    self.i += 1
                    args.append(self.sum())
                self.take(")")
                return ("call", value, args)
            return ("var", value)
        if value == "(":
            inner = self.sum()
            self.take(")")
            return inner
        raise ValueError(f"unexpected {value!r} in expression {self.text!r}")


def parse(expression: str) -> tuple[object, dict[str, object]]:
    """Parse ``expression`` into (main tree, {name: definition tree})."""
    parts = [p.strip() for p in expression.split(";")]
    parts = [p for p in parts if p]
    if not parts:
        raise ValueError(f"empty expression {expression!r}")
    main = _Parser(parts[0]).parse()
    definitions: dict[str, object] = {}
    for part in parts[1:]:
        name, eq, body = part.partition("=")
        name = name.strip()
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"definition {part!r} is not 'name = expression' in expression {expression!r}")
        definitions[name] = _Parser(body).parse()
    return main, definitions


def compile_expression(
    expression: str,
    variables: Iterable[str],
    functions: Mapping[str, tuple[int, Callable[..., Tensor]]] | None = None,
) -> tuple[Compiled, set[str]]:
    """Compile ``expression`` into ``f(env) -> Tensor``; returns ``(f, used variable names)``.

    ``variables`` are the names the caller will supply in ``env``; ``functions`` adds named functions
    ``name -> (n_args, callable)`` (tabulated functions).  Raises ``ValueError`` for syntax errors, unknown
    functions, wrong argument counts, unknown variables and cyclic definitions.
    """
    allowed = set(variables)
    table = dict(FUNCTIONS)
    table.update(functions or {})
    main, definitions = parse(expression)
    used: set[str] = set()
    cache: dict[str, Compiled] = {}
    active: set[str] = set()

    def build(node) -> Compiled | float:
        kind = node[0]
        if kind == "num":
            return node[1]
        if kind == "var":
            name = node[1]
            if name in definitions:
                if name in active:
                    raise ValueError(f"cyclic definition of {name!r} in expression {expression!r}")
                if name not in cache:
                    active.add(name)
                    cache[name] = build(definitions[name])
                    active.discard(name)
                return cache[name]
            if name not in allowed:
                raise ValueError(f"unknown variable {name!r} in expression {expression!r}")
            used.add(name)
            return lambda env, name=name: env[name]
        if kind == "neg":
            a = build(node[1])
            if isinstance(a, float):
                return -a
            return lambda env: -a(env)
        if kind == "op":
            op, a, b = node[1], build(node[2]), build(node[3])
            if isinstance(a, float) and isinstance(b, float):
                return _fold(op, a, b)
            fa = a if callable(a) else (lambda env, v=a: v)
            if op == "^" and isinstance(b, float):
                e = int(b) if b.is_integer() else b
                if e == 2:
                    return lambda env: fa(env) * fa(env)
                return lambda env: fa(env) ** e
            fb = b if callable(b) else (lambda env, v=b: v)
            if op == "+":
                return lambda env: fa(env) + fb(env)
            if op == "-":
                return lambda env: fa(env) - fb(env)
            if op == "*":
                return lambda env: fa(env) * fb(env)
            if op == "/":
                return lambda env: fa(env) / fb(env)
            return lambda env: _pow_tensor(fa(env), fb(env))
        # call
        name, args = node[1], node[2]
        if name not in table:
            raise ValueError(f"unsupported function {name!r} in expression {expression!r}")
        n_args, fn = table[name]
        if len(args) != n_args:
            raise ValueError(f"function {name!r} takes {n_args} argument(s), got {len(args)} in {expression!r}")
        built = [build(a) for a in args]
        if all(isinstance(a, float) for a in built) and name in FUNCTIONS and name not in (functions or {}):
            return float(fn(*[torch.tensor(a, dtype=torch.float64) for a in built]))
        fargs = [a if callable(a) else _const(a) for a in built]
        return lambda env: fn(*[_as_tensor(f(env), env) for f in fargs])

    root = build(main)
    if not callable(root):
        value = root
        return (lambda env: _as_tensor(value, env)), used
    return root, used


def _const(v: float) -> Compiled:
    return lambda env: v


def _as_tensor(v, env: Env) -> Tensor:
    if isinstance(v, Tensor):
        return v
    ref = next((t for t in env.values() if isinstance(t, Tensor)), None)
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float64
    device = ref.device if ref is not None else None
    return torch.tensor(v, dtype=dtype, device=device)


def _pow_tensor(a, b):
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return torch.pow(a, b)
    return a**b


def _fold(op: str, a: float, b: float) -> float:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return a / b if b != 0 else math.copysign(math.inf, a) if a != 0 else math.nan
    return a**b


def tabulated_function(fn, name: str) -> tuple[int, Callable[..., Tensor]]:
    """Translate an OpenMM ``Discrete1D/2D/3DFunction`` into ``(n_args, callable)``; arguments are rounded to
    the nearest integer index, ``index = x + nx * (y + ny * z)`` (zero derivative, like OpenMM)."""
    kind = type(fn).__name__
    if kind == "Discrete1DFunction":
        values = torch.tensor(list(fn.getFunctionParameters()), dtype=torch.float64)
        sizes = [values.numel()]
    elif kind == "Discrete2DFunction":
        nx, ny, vals = fn.getFunctionParameters()
        values, sizes = torch.tensor(list(vals), dtype=torch.float64), [nx, ny]
    elif kind == "Discrete3DFunction":
        nx, ny, nz, vals = fn.getFunctionParameters()
        values, sizes = torch.tensor(list(vals), dtype=torch.float64), [nx, ny, nz]
    else:
        raise ValueError(f"tabulated function {name!r} of type {kind} is not supported (only Discrete1D/2D/3D)")

    def lookup(*args: Tensor) -> Tensor:
        args = torch.broadcast_tensors(*args)
        index = torch.zeros(args[0].shape, dtype=torch.long, device=args[0].device)
        stride = 1
        for a, size in zip(args, sizes):
            k = torch.round(a.detach()).long()
            if bool(((k < 0) | (k >= size)).any()):
                raise ValueError(f"tabulated function {name!r}: argument out of range [0, {size})")
            index = index + stride * k
            stride *= size
        return values.to(device=args[0].device, dtype=args[0].dtype)[index]

    return len(sizes), lookup
