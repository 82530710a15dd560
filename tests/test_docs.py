"""The documentation site builds in strict mode (warnings are errors) and has its API and tutorial pages.

Runs ``mkdocs build --strict -f docs/mkdocs.yml`` (the command CI runs) into a temporary folder once, then checks
the output: one API page per subpackage of ``bgflow_sci`` (found on disk, as the site's hooks find them), one page
per tutorial script with its figures copied, the benchmarks and home pages, and no reST role left unconverted.
Skipped only when mkdocs is not installed outside CI; under ``CI=true`` a missing mkdocs is a failure.
"""

from __future__ import annotations

import html
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "docs" / "mkdocs.yml"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# a few names each API page must document (the subpackage's central objects)
EXPECTED_API = {
    "bgflow_sci": ["BoltzmannGenerator", "DensityModel", "StateMixture", "molecular_boltzmann_generator"],
    "distributions": ["Distribution", "Normal", "UniformBox"],
    "energies": ["Energy", "energy_and_force", "DoubleWell2D", "TorchForceField", "InterpolatedEnergy"],
    "flows": ["Flow", "Sequential", "RationalQuadraticSpline", "ContinuousFlow", "InternalCoordinates"],
    "training": ["Trainer", "MaximumLikelihood", "ReverseKL", "FlowMatching"],
    "samplers": ["Sampler", "HMC", "MALA", "FlowEnhancedMD"],
    "reweighting": ["ess", "log_z", "free_energy_difference", "free_energy_profile"],
    "hep": ["MorphingFlow", "fit_morphing", "read_tree"],
    "io": ["save_checkpoint", "load_checkpoint", "CheckpointError"],
    "workflows": ["load_system", "load_model"],
    "cli": ["main", "bgflow-sci train", "bgflow-sci morph"],
}


def _text(path: Path) -> str:
    """The visible text of an HTML page: inline tags dropped, block tags as spaces, whitespace runs as one space."""
    raw = path.read_text(encoding="utf-8")
    raw = re.sub(r"<(script|style)\b.*?</\1>", " ", raw, flags=re.DOTALL)
    raw = re.sub(r"</?(span|code|a|em|strong|b|i|autoref)\b[^>]*>", "", raw)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", raw)).split())


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None:
        if IN_CI:
            pytest.fail("mkdocs / mkdocstrings are not installed (pip install -e '.[docs]'); CI must build the docs")
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(CONFIG), "-d", str(out)]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"strict docs build failed:\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
    return out


def test_api_page_per_subpackage(site: Path) -> None:
    subpackages = sorted(p.parent.name for p in (REPO / "bgflow_sci").glob("*/__init__.py"))
    assert subpackages, "no subpackages found"
    for name in ["bgflow_sci", *(s for s in subpackages if not s.startswith("_"))]:
        page = site / "api" / f"{name}.html"
        assert page.is_file(), f"no API page for {name}"
        text = _text(page)
        for expected in EXPECTED_API.get(name, []):
            assert expected in text, f"{expected!r} missing from the API page of {name}"
    index = _text(site / "api" / "index.html")
    assert "bgflow_sci.flows" in index and "bgflow_sci.reweighting" in index


def test_api_pages_render_docstrings(site: Path) -> None:
    flows = (site / "api" / "flows.html").read_text(encoding="utf-8")
    # the mkdocstrings anchor of the class, and its docstring text
    assert re.search(r'id="bgflow_sci\.flows(\.\w+)*\.RationalQuadraticSpline"', flows)
    assert "rational-quadratic spline" in _text(site / "api" / "flows.html").lower()
    for page in (site / "api").glob("*.html"):
        text = _text(page)
        leftover = re.search(r":(class|func|meth|mod|attr|data):`", text)
        assert leftover is None, (
            f"unconverted reST role in {page.name}: {text[leftover.start() - 80 : leftover.end() + 40]}"
        )
    # roles become links when their target is documented: the flows page links AffineCoupling's base Coupling
    assert 'href="#bgflow_sci.flows.coupling.Coupling"' in flows or 'href="#bgflow_sci.flows.Coupling"' in flows


def test_tutorial_pages_with_figures(site: Path) -> None:
    scripts = sorted((REPO / "tutorials").glob("[0-9][0-9]_*.py"))
    assert len(scripts) == 8, [s.name for s in scripts]
    for script in scripts:
        page = site / "tutorials" / f"{script.stem}.html"
        assert page.is_file(), f"no page for {script.name}"
        raw = page.read_text(encoding="utf-8")
        text = _text(page)
        title = script.read_text(encoding="utf-8").split('"""')[1].splitlines()[0].strip().rstrip(".")
        assert title in text, f"docstring title of {script.name} missing"
        assert "def main(" in text, f"code of {script.name} missing"
        for src in re.findall(r'<img [^>]*src="([^"]+)"', raw):
            assert (page.parent / src).is_file(), f"{script.name}: figure {src} not in the site"
    figures = {
        "01_boltzmann_generator_double_well": ["training.png", "free_energy_x1.png"],
        "02_flow_families": ["flow_families.png"],
        "04_hep_sim_to_data": ["hep_variables.png", "hep_mass.png"],
        "05_alanine_dipeptide": ["ala2_map_phi_psi.png", "ala2_free_energy_phi.png"],
        "08_hep_real_events_cli": ["hep_cli_mass.png", "hep_cli_variables.png"],
    }
    for stem, names in figures.items():
        raw = (site / "tutorials" / f"{stem}.html").read_text(encoding="utf-8")
        for name in names:
            if (REPO / "tutorials" / "figures" / name).is_file():
                assert f'src="figures/{name}"' in raw, f"{stem} does not show {name}"
    assert "tutorials/01_boltzmann_generator_double_well" in _text(site / "tutorials" / "index.html")


def test_home_guide_and_benchmarks(site: Path) -> None:
    home = _text(site / "index.html")
    assert "pip install" in home and "bgflow-sci demo" in home, "README set-up section not included"
    for page in ("conventions", "models", "training", "systems"):
        assert (site / "guide" / f"{page}.html").is_file()
    if (REPO / "BENCHMARKS.md").is_file():
        assert "Benchmarks" in _text(site / "benchmarks.html")
