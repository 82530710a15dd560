"""MkDocs hooks: the pages that are generated from the repository at build time, so that they never drift from it.

* ``api/*.md`` — one page per subpackage of ``bgflow_sci`` (found on disk, so a new or renamed subpackage or module
  needs no edit here): the package docstring, a table of the names it exports (``__all__``, each with the first
  sentence of its docstring and a link to its documentation) and the mkdocstrings reference of each public module.
  The CLI page adds every command's ``--help``, taken from the argument parser itself.
* ``tutorials/*.md`` — one page per ``tutorials/NN_*.py`` script: its module docstring as text, the figures it
  writes that are committed in ``tutorials/figures/``, and the script's code.
* ``benchmarks.md`` — ``BENCHMARKS.md`` as it is.
* ``index.md`` — the README's set-up section is inserted where the page has ``<!-- README: set-up -->``.

Relative links and images in included repository Markdown (README, BENCHMARKS) are rewritten: images that exist
are copied into the site, links to repository files become plain code (the site has no pages for them).
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import io
import logging
import os
import posixpath
import re
import sys
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

log = logging.getLogger("mkdocs.hooks.bgflow_sci")

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
PACKAGE = REPO / "bgflow_sci"
TUTORIALS = REPO / "tutorials"
FIGURES = TUTORIALS / "figures"

# Top-level modules of bgflow_sci in reading order on the package page (any other public module follows).
ROOT_MODULES = ["bg", "state_mixture", "molecular"]
# Subpackages in navigation order (any other subpackage follows, alphabetically).
SUBPACKAGES = ["distributions", "energies", "flows", "training", "samplers", "reweighting", "hep", "io"]
SUBPACKAGES += ["workflows", "cli"]
# Committed figures that a tutorial does not write itself but belongs with (figure -> caption).
EXTRA_FIGURES = {
    "01_boltzmann_generator_double_well": {
        "densities.png": "written by `bgflow-sci demo`, which runs this tutorial's pipeline",
    },
}
README_SETUP_MARKER = "<!-- README: set-up -->"
README_SETUP_HEADING = re.compile(r"^##\s+(set-?up|install)", re.IGNORECASE)
_README_SETUP: dict[str, str] = {}  # page src_uri -> README set-up section with its links rewritten for that page


def _load_roles():
    spec = importlib.util.spec_from_file_location("bgflow_sci_docs_sphinx_roles", DOCS / "sphinx_roles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


roles = _load_roles()


# --------------------------------------------------------------------------------------------------- utilities
def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _first_sentence(doc: str | None, resolve=None) -> str:
    """The summary of a docstring for a table cell: its first paragraph up to the first full stop, on one line,
    roles as references (``resolve``: see :func:`sphinx_roles.roles_to_markdown`), ``|`` outside code escaped."""
    if not doc:
        return ""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    pieces = re.split(r"(`+[^`]*`+)", paragraph)  # text and code spans (``...``, :role:`...`)
    summary = []
    for piece in pieces:
        stop = None if piece.startswith("`") else re.search(r"(?<!\be\.g)(?<!\bi\.e)\.(\s|$)", piece)
        summary.append(piece[: stop.start() + 1] if stop else piece)
        if stop:
            break
    cell = roles.roles_to_markdown("".join(summary), resolve)
    pieces = re.split(r"(`+[^`]*`+|<code>.*?</code>)", cell)  # code keeps its pipes (the tables extension skips it)
    return "".join(piece if piece.startswith(("`", "<code>")) else piece.replace("|", "\\|") for piece in pieces)


def _autoref(identifier: str, title: str) -> str:
    return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'


def _fence(code: str, language: str = "") -> str:
    ticks = "```"
    while ticks in code:
        ticks += "`"
    return f"{ticks}{language}\n{code.rstrip()}\n{ticks}"


# ------------------------------------------------------------------------------------------------ API pages
@dataclass
class ModuleInfo:
    """What the API pages need to know about a module, read statically from its source."""

    path: str  # dotted
    file: Path
    tree: ast.Module
    submodules: list[ModuleInfo] = field(default_factory=list)

    @property
    def is_package(self) -> bool:
        return self.file.name == "__init__.py"

    @property
    def exports(self) -> list[str]:
        for node in self.tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets) and node.value is not None:
                try:
                    return [str(v) for v in ast.literal_eval(node.value)]
                except ValueError:
                    return []
        return []

    def definitions(self) -> dict[str, ast.AST]:
        """Top-level classes, functions and assigned names."""
        found: dict[str, ast.AST] = {}
        for node in self.tree.body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                found[node.name] = node
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    if isinstance(t, ast.Name):
                        found[t.id] = node
        return found

    def imports(self) -> dict[str, tuple[str, str]]:
        """``name -> (module path, name there)`` for the module's ``from X import name`` statements."""
        package = self.path if self.is_package else self.path.rpartition(".")[0]
        found: dict[str, tuple[str, str]] = {}
        for node in self.tree.body:
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                base = package.split(".")
                if node.level > 1:
                    base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
                for alias in node.names:
                    found[alias.asname or alias.name] = (source, alias.name)
        return found


def _module(path: str, file: Path) -> ModuleInfo:
    info = ModuleInfo(path, file, ast.parse(file.read_text(encoding="utf-8")))
    if info.is_package:
        folder = file.parent
        children = sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))
        children += sorted(p / "__init__.py" for p in folder.iterdir() if (p / "__init__.py").is_file())
        for child in children:
            name = child.parent.name if child.name == "__init__.py" else child.stem
            if not name.startswith("_"):
                info.submodules.append(_module(f"{path}.{name}", child))
    return info


class Index:
    """Every module of the package by dotted path, to find where an exported name is defined."""

    def __init__(self, root: ModuleInfo):
        self.modules: dict[str, ModuleInfo] = {}
        stack = [root]
        while stack:
            m = stack.pop()
            self.modules[m.path] = m
            stack.extend(m.submodules)

    def locate(self, module: str, name: str, depth: int = 0) -> tuple[str, ast.AST | None]:
        """The canonical dotted path of ``module.name`` and its definition node (following re-exports)."""
        info = self.modules.get(module)
        if info is None or depth > 10:
            return f"{module}.{name}", None
        defs = info.definitions()
        if name in defs and name not in info.imports():
            return f"{module}.{name}", defs[name]
        if name in info.imports():
            source, original = info.imports()[name]
            if f"{source}.{original}" in self.modules:  # a module imported by name
                return f"{source}.{original}", self.modules[f"{source}.{original}"].tree
            return self.locate(source, original, depth + 1)
        for sub in info.submodules:  # lazily exported (module __getattr__): defined in one of the submodules
            if name in sub.definitions() and name not in sub.imports():
                return f"{sub.path}.{name}", sub.definitions()[name]
        return f"{module}.{name}", None

    def canonical(self, path: str) -> str:
        """``path`` with re-exports followed, when its longest module prefix is a module of the package."""
        parts = path.split(".")
        for k in range(len(parts) - 1, 0, -1):
            module = ".".join(parts[:k])
            if module in self.modules:
                found, _ = self.locate(module, parts[k])
                return ".".join([found, *parts[k + 1 :]])
        return path

    def resolver(self, module: str):
        """Resolve role targets written in ``module``: its names, its package's names and other modules, ``.x``
        relative modules, dotted paths through re-exports (the static twin of ``sphinx_roles.scope_resolver``)."""
        info = self.modules.get(module)
        package = module if info is not None and info.is_package else module.rpartition(".")[0]

        def lookup(head: str) -> str | None:
            for name in (module, package):
                m = self.modules.get(name)
                if m is not None and (head in m.definitions() or head in m.imports() or head in m.exports):
                    return self.locate(name, head)[0]
            for sub in self.modules[package].submodules if package in self.modules else []:
                if head in sub.definitions() and head not in sub.imports():
                    return f"{sub.path}.{head}"
            return None

        def resolve(target: str) -> str | None:
            if target.startswith("."):
                return f"{package}.{target.lstrip('.')}"
            head, _, rest = target.partition(".")
            found = lookup(head)
            if found is None:
                return self.canonical(target) if rest else None
            return self.canonical(f"{found}.{rest}") if rest else found

        return resolve


def _docstring(node: ast.AST | None) -> str | None:
    if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef, ast.Module)):
        return ast.get_docstring(node)
    return None


def _exports_table(info: ModuleInfo, index: Index) -> str:
    own = set(_own_members(info))  # documented right above the table
    names = [n for n in info.exports if not n.startswith("__") and n not in own]
    if not names:
        return ""
    rows = [
        f"The public names of `{info.path}` (its `__all__`), importable as `from {info.path} import NAME`:",
        "",
        "| name | summary |",
        "|---|---|",
    ]
    for name in names:
        target, node = index.locate(info.path, name)
        where = target.rpartition(".")[0] if node is not None and not isinstance(node, ast.Module) else target
        rows.append(f"| {_autoref(target, name)} | {_first_sentence(_docstring(node), index.resolver(where))} |")
    return "\n".join(rows)


def _directive(path: str, heading_level: int, **options: object) -> str:
    lines = [f"::: {path}", "    options:", f"      heading_level: {heading_level}"]
    lines += [f"      {k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in options.items()]
    return "\n".join(lines)


def _module_sections(info: ModuleInfo, level: int) -> list[str]:
    """mkdocstrings blocks for every public module under ``info`` (subpackages: docstring, then their modules)."""
    parts: list[str] = []
    for sub in info.submodules:
        if sub.is_package:
            own = _own_members(sub)
            parts.append(_directive(sub.path, level, members=f"[{', '.join(own)}]" if own else False))
            parts.extend(_module_sections(sub, level + 1))
        else:
            parts.append(_directive(sub.path, level))
    return parts


def _own_members(info: ModuleInfo) -> list[str]:
    """Public classes and functions defined in a package's ``__init__`` itself (not imported)."""
    imported = info.imports()
    return [
        name
        for name, node in info.definitions().items()
        if not name.startswith("_")
        and name not in imported
        and isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and (not info.exports or name in info.exports)
    ]


def _package_page(info: ModuleInfo, index: Index, sections: list[str], extra: str = "") -> str:
    """Title, package docstring (and what ``__init__`` defines itself), exports table, ``extra`` Markdown, then the
    module ``sections``."""
    own = _own_members(info)
    members = f"[{', '.join(own)}]" if own else False
    parts = [f"# `{info.path}`", _directive(info.path, 2, members=members, show_root_heading=False)]
    parts += [_exports_table(info, index), extra, *sections]
    return "\n\n".join(p for p in parts if p) + "\n"


def _cli_reference() -> str:
    """``bgflow-sci ... --help`` of every command, from the argument parser (imports bgflow_sci.cli)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    for name in [m for m in sys.modules if m == "bgflow_sci" or m.startswith("bgflow_sci.")]:
        del sys.modules[name]  # `mkdocs serve`: pick up edits to the CLI on every rebuild
    import argparse

    from bgflow_sci.cli import build_parser

    def helps(parser: argparse.ArgumentParser, prefix: str) -> list[tuple[str, str]]:
        out = [(prefix, parser.format_help())]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    out += helps(sub, f"{prefix} {name}")
        return out

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "110"
    try:
        with redirect_stdout(io.StringIO()):
            entries = helps(build_parser(), "bgflow-sci")
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    parts = ["## Commands", "", "The `--help` of every command, as the installed `bgflow-sci` prints it."]
    for command, text in entries:
        parts += ["", f"### `{command}`", "", _fence(text, "text")]
    return "\n".join(parts)


def api_pages() -> list[tuple[str, str, str]]:
    """``(src_uri, nav title, markdown)`` of the API index and one page per subpackage."""
    root = _module("bgflow_sci", PACKAGE / "__init__.py")
    index = Index(root)
    packages = {m.path.rpartition(".")[2]: m for m in root.submodules if m.is_package}
    plain = {m.path.rpartition(".")[2]: m for m in root.submodules if not m.is_package}
    ordered_root = [plain[n] for n in ROOT_MODULES if n in plain] + [
        m for n, m in plain.items() if n not in ROOT_MODULES
    ]
    ordered = [n for n in SUBPACKAGES if n in packages] + sorted(n for n in packages if n not in SUBPACKAGES)

    root_sections = [_directive(m.path, 2) for m in ordered_root]
    pages = [("api/bgflow_sci.md", "bgflow_sci", _package_page(root, index, root_sections))]
    for name in ordered:
        info = packages[name]
        extra = ""
        if name == "cli":
            try:
                extra = _cli_reference()
            except Exception as err:  # a broken CLI must fail the strict build with a message, not a traceback
                log.warning("CLI reference: building the bgflow-sci parser failed: %s: %s", type(err).__name__, err)
        pages.append((f"api/{name}.md", info.path, _package_page(info, index, _module_sections(info, 2), extra)))

    lines = [
        "# API reference",
        "",
        "Generated from the docstrings. One page per subpackage; each lists the names the subpackage exports and",
        "then documents its modules. Energies are in kT, tensors are batch-first `(batch, dim)`.",
        "",
        "| page | contents |",
        "|---|---|",
    ]
    for uri, title, _ in pages:
        info = root if title == "bgflow_sci" else packages[title.rpartition(".")[2]]
        summary = _first_sentence(ast.get_docstring(info.tree), index.resolver(info.path))
        lines.append(f"| [`{title}`]({uri.rpartition('/')[2]}) | {summary} |")
    return [("api/index.md", "Overview", "\n".join(lines) + "\n"), *pages]


# ------------------------------------------------------------------------------------------------ tutorials
@dataclass
class Tutorial:
    script: Path
    title: str
    markdown: str
    figures: list[str]


def _docstring_markdown(text: str) -> str:
    """A module docstring (reST-flavoured) as Markdown: roles, ``Run:`` lines and ``::`` literal blocks."""
    text = roles.roles_to_markdown(text)
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        run = re.match(r"^Run:\s+(.+)$", line)
        if run:
            out += ["Run:", "", _fence(run[1], "bash")]
            i += 1
            continue
        if line.rstrip().endswith("::"):
            head = line.rstrip()[:-2].rstrip()
            out.append(head + ":" if head else "")
            j = i + 1
            block: list[str] = []
            while j < len(lines) and (not lines[j].strip() or lines[j].startswith((" ", "\t"))):
                block.append(lines[j])
                j += 1
            while block and not block[-1].strip():
                block.pop()
            indent = min((len(b) - len(b.lstrip()) for b in block if b.strip()), default=0)
            out += ["", _fence("\n".join(b[indent:] for b in block), "bash"), ""]
            i = j
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def _figures_of(script: Path, source: str) -> list[str]:
    """Committed figures the script writes: a ``.png`` name (or glob) in its source equal to a figure's name or to
    its suffix after a prefix (``map_phi_psi.png`` -> ``ala2_map_phi_psi.png``), in order of first mention."""
    available = sorted(p.name for p in FIGURES.glob("*.png")) if FIGURES.is_dir() else []
    tokens = re.findall(r"[A-Za-z0-9_*\-]+\.png", source)
    found: list[str] = []
    for token in [t for t in tokens if "*" not in t] + [t for t in tokens if "*" in t]:  # exact names first
        for name in available:
            if name not in found and (fnmatch.fnmatch(name, token) or name.endswith("_" + token)):
                found.append(name)
    found += [n for n in EXTRA_FIGURES.get(script.stem, {}) if n in available and n not in found]
    return found


def tutorial(script: Path) -> Tutorial:
    source = script.read_text(encoding="utf-8")
    tree = ast.parse(source)
    doc = ast.get_docstring(tree) or script.stem
    code_lines = source.splitlines()
    if tree.body and isinstance(tree.body[0], ast.Expr) and ast.get_docstring(tree):
        code_lines = code_lines[tree.body[0].end_lineno :]
    code = "\n".join(code_lines).strip("\n")
    title, _, body = doc.partition("\n")
    figures = _figures_of(script, source)
    parts = [
        f"# {title.strip().rstrip('.')}",
        f"*Script:* `{_rel(script)}` — generated from its docstring and code; run it from the repository root.",
        _docstring_markdown(body.strip()),
    ]
    if figures:
        parts.append("## Figures")
        parts.append(f"Committed in `{_rel(FIGURES)}/`; a run writes its own to `--out`.")
        for name in figures:
            note = EXTRA_FIGURES.get(script.stem, {}).get(name)
            caption = f"`{name}`" + (f" — {note}" if note else "")
            parts.append(f"![{name}](figures/{name})\n\n{caption}")
    else:
        parts.append(f"No figure of this script is committed in `{_rel(FIGURES)}/`; a run writes its plots to `--out`.")
    parts += ["## Code", _fence(code, "python")]
    return Tutorial(script, title.strip(), "\n\n".join(parts) + "\n", figures)


def _nav_title(t: Tutorial) -> str:
    """``Tutorial 4 — morph simulated photons ...`` -> ``4. Morph simulated photons ...`` (first clause only)."""
    match = re.match(r"^Tutorial\s+(\d+)\s*[—–-]+\s*(.+)$", t.title)
    if not match:
        return t.title
    text = re.split(r",|;| \(", match[2])[0].strip().rstrip(".")
    return f"{match[1]}. {text[:1].upper()}{text[1:]}"


def tutorial_scripts() -> list[Path]:
    return sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))


def tutorials_index(items: list[Tutorial]) -> str:
    lines = [
        "# Tutorials",
        "",
        "Runnable scripts in `tutorials/`; each takes `--quick` (the smoke test the test suite runs) and `--out DIR`.",
        "These pages are generated from the scripts at build time.",
        "",
    ]
    for t in items:
        lines.append(f"* [{t.title}]({t.script.stem}.md) — `{_rel(t.script)}`")
    claimed = {f for t in items for f in t.figures}
    unclaimed = sorted(p.name for p in FIGURES.glob("*.png") if p.name not in claimed) if FIGURES.is_dir() else []
    if unclaimed:
        lines += ["", "## Other figures", ""]
        lines += [f"![{n}](figures/{n})\n\n`{n}`\n" for n in unclaimed]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- repository text
LINK = re.compile(r"(?P<bang>!?)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)\)")


def _repo_markdown(text: str, source: Path, files: Files, config: MkDocsConfig, page_uri: str) -> str:
    """Rewrite relative links/images of repository Markdown ``source`` for a page at ``page_uri``."""

    def replace(match: re.Match[str]) -> str:
        target = match["target"]
        if re.match(r"^[a-z]+:|^#", target):
            return match[0]
        path = (source.parent / target.split("#")[0]).resolve()
        if match["bang"] and path.is_file() and REPO in path.parents:
            uri = f"assets/repo/{_rel(path)}"
            if files.get_file_from_path(uri) is None:
                files.append(File.generated(config, uri, abs_src_path=str(path)))
            relative = posixpath.relpath(uri, posixpath.dirname(page_uri) or ".")
            return f"![{match['text']}]({relative})"
        if match["bang"]:
            return f"`{target}`"
        return f"{match['text']} (`{_rel(path) if REPO in path.parents else target}`)"

    return LINK.sub(replace, text)


def readme_setup() -> str | None:
    """The README's set-up section (heading ``## Set-up...`` or ``## Install...``) without its heading."""
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if README_SETUP_HEADING.match(line):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
            return "\n".join(lines[i + 1 : end]).strip()
    return None


# ---------------------------------------------------------------------------------------------------- hooks
def _expand_nav(nav: list, placeholder: str, entries: list) -> None:
    for k, item in enumerate(nav):
        if isinstance(item, dict):
            (title, value), *_ = item.items()
            if value == placeholder or (isinstance(value, list) and value and value[0] == placeholder):
                nav[k] = {title: [placeholder, *entries]}
            elif isinstance(value, list):
                _expand_nav(value, placeholder, entries)


def on_config(config: MkDocsConfig) -> None:
    for path in (PACKAGE, TUTORIALS, REPO / "README.md", REPO / "BENCHMARKS.md"):
        if path.exists() and str(path) not in config.watch:
            config.watch.append(str(path))


def on_files(files: Files, config: MkDocsConfig) -> Files:
    def add(uri: str, content: str | None = None, path: Path | None = None) -> None:
        existing = files.get_file_from_path(uri)
        if existing is not None:
            files.remove(existing)
        if content is not None:
            files.append(File.generated(config, uri, content=content))
        else:
            files.append(File.generated(config, uri, abs_src_path=str(path)))

    pages = api_pages()
    for uri, _, md in pages:
        add(uri, md)

    items = [tutorial(s) for s in tutorial_scripts()]
    if not items:
        log.warning("no tutorials found in %s", TUTORIALS)
    for t in items:
        add(f"tutorials/{t.script.stem}.md", t.markdown)
    add("tutorials/index.md", tutorials_index(items))
    for png in sorted(FIGURES.glob("*.png")) if FIGURES.is_dir() else []:
        add(f"tutorials/figures/{png.name}", path=png)

    benchmarks = REPO / "BENCHMARKS.md"
    if benchmarks.is_file():
        text = benchmarks.read_text(encoding="utf-8")
        add("benchmarks.md", _repo_markdown(text, benchmarks, files, config, "benchmarks.md"))

    _README_SETUP.clear()
    setup = readme_setup()
    if setup is not None:
        for f in files.documentation_pages():
            if f.content_string and README_SETUP_MARKER in f.content_string:
                _README_SETUP[f.src_uri] = _repo_markdown(setup, REPO / "README.md", files, config, f.src_uri)

    if config.nav is not None:
        _expand_nav(config.nav, "api/index.md", [{title: uri} for uri, title, _ in pages[1:]])
        _expand_nav(config.nav, "tutorials/index.md", [{_nav_title(t): f"tutorials/{t.script.stem}.md"} for t in items])
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    if README_SETUP_MARKER in markdown:
        section = _README_SETUP.get(page.file.src_uri)
        if section is None:
            log.warning("README.md has no '## Set-up' or '## Install' section for %s", page.file.src_uri)
            section = "See `README.md`."
        markdown = markdown.replace(README_SETUP_MARKER, section)
    return markdown
