"""Sphinx-style roles in docstrings (``:class:`Flow```, ``:meth:`~a.B.c```, ``:mod:`.io```) as Markdown.

The package's docstrings are written with reST roles; mkdocstrings renders docstrings as Markdown, where a role
would show up as ``:class:`` followed by a code span.  :func:`roles_to_markdown` turns each role into an *optional*
autorefs cross-reference: a link when the target is documented on the site, plain code otherwise (optional
references never produce a warning, so a role naming an undocumented object cannot break a strict build).

:class:`SphinxRoles` is the Griffe extension that applies it to every docstring of a loaded package, resolving
relative targets (``Flow``, ``.io``, ``Energy.energy_and_force``) in the scope of the object that carries the
docstring, and turns the ``::`` that introduces a literal block into a colon (:func:`literal_intros_to_markdown`).
The MkDocs hooks (``hooks.py``) use :func:`roles_to_markdown` for the tutorials' module docstrings.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

import griffe

ROLE = re.compile(r":(?:py:)?(?P<role>[a-z]+):`(?P<body>[^`]+)`")
TITLED = re.compile(r"^(?P<title>.+?)\s*<(?P<target>[^<>]+)>$")

Resolver = Callable[[str], str | None]


def roles_to_markdown(text: str, resolve: Resolver | None = None) -> str:
    """Replace every ``:role:`target``` in ``text`` by an optional autorefs reference with a code title.

    ``target`` forms: ``path``, ``~path`` (title: the last component), ``title <path>``.  ``resolve`` maps a
    target as written (possibly relative) to a full dotted path, or ``None`` when it cannot; unresolved targets
    keep their spelling as identifier (rendered as plain code unless an object of that exact path is documented).
    """

    def replace(match: re.Match[str]) -> str:
        body = match["body"].strip()
        titled = TITLED.match(body)
        if titled:
            title, target = titled["title"], titled["target"].strip()
        else:
            target = body
            title = body.lstrip("~").split(".")[-1] if body.startswith("~") else body.lstrip(".")
        target = target.lstrip("~")
        identifier = (resolve(target) if resolve is not None else None) or target.lstrip(".")
        return f'<autoref identifier="{html.escape(identifier)}" optional><code>{html.escape(title)}</code></autoref>'

    return ROLE.sub(replace, text)


LITERAL_INTRO = re.compile(r"^(?P<text>.*?)\s*::\s*$")


def literal_intros_to_markdown(text: str) -> str:
    """reST ``paragraph::`` before a literal block -> ``paragraph:`` (a lone ``::`` line is dropped).

    The indented block itself already is a Markdown code block (it follows a blank line); only lines followed by
    a blank line are touched, so Google-style sections (``Args:`` followed by indented lines) are left alone.
    """
    lines = text.split("\n")
    out: list[str] = []
    for k, line in enumerate(lines):
        match = LITERAL_INTRO.match(line)
        if match and (k + 1 == len(lines) or not lines[k + 1].strip()):
            if match["text"].strip():
                out.append(match["text"] + ":")
            continue
        out.append(line)
    return "\n".join(out)


def _module_of(obj: griffe.Object) -> griffe.Module:
    while not obj.is_module:
        obj = obj.parent
    return obj


def _package_of(module: griffe.Module) -> griffe.Module:
    return module if module.is_init_module or module.parent is None else module.parent


def _target(member: griffe.Object | griffe.Alias) -> str | None:
    try:
        return member.final_target.path if member.is_alias else member.path
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return member.target_path if member.is_alias else None


def canonical(root: griffe.Object, path: str) -> str:
    """``path`` with every re-export followed (``pkg.Energy.force`` -> ``pkg.base.Energy.force``) when ``root`` (the
    top-level package) knows it; unchanged otherwise."""
    parts = path.split(".")
    if parts[0] != root.name:
        return path
    current: griffe.Object | griffe.Alias = root
    for k, part in enumerate(parts[1:], start=1):
        try:
            members = current.all_members if current.is_class else current.members
            current = members[part]
            if current.is_alias:
                current = current.final_target
        except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            return ".".join([current.path, *parts[k:]]) if k > 1 else path
    return current.path


def scope_resolver(obj: griffe.Object) -> Resolver:
    """Resolve role targets the way Sphinx would from ``obj``'s docstring: the object and its enclosing classes
    (inherited members included), its module (definitions and imports), then the enclosing package's exports and
    the package's other modules; dotted paths are followed through re-exports."""
    module = _module_of(obj)
    package = _package_of(module)
    root = module
    while root.parent is not None:
        root = root.parent

    def lookup(head: str) -> str | None:
        scope: griffe.Object | None = obj
        while scope is not None:
            if scope.is_class and head in scope.all_members:
                return _target(scope.all_members[head])
            if scope.is_module:
                break
            scope = scope.parent
        for candidate in (module, package):
            if head in candidate.members:
                return _target(candidate.members[head])
        for sibling in package.members.values():
            if not sibling.is_alias and sibling.is_module and head in sibling.members:
                member = sibling.members[head]
                if not member.is_alias:
                    return member.path
        return None

    def resolve(target: str) -> str | None:
        if target.startswith("."):  # relative to the current package: ``.io`` in bgflow_sci.hep -> bgflow_sci.hep.io
            return f"{package.path}.{target.lstrip('.')}"
        head, _, rest = target.partition(".")
        found = lookup(head)
        if found is None:
            return canonical(root, target) if "." in target else None
        return canonical(root, f"{found}.{rest}") if rest else found

    return resolve


class SphinxRoles(griffe.Extension):
    """Griffe extension: rewrite reST roles in every docstring of a package once it is fully loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: object) -> None:
        self._visit(pkg)

    def _visit(self, obj: griffe.Object) -> None:
        if obj.docstring is not None and ":" in obj.docstring.value:
            value = literal_intros_to_markdown(obj.docstring.value)
            obj.docstring.value = roles_to_markdown(value, scope_resolver(obj))
        for member in obj.members.values():
            if not member.is_alias:
                self._visit(member)
