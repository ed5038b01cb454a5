"""The conda environments (envs/*.yaml) agree with pyproject.toml, and every rule's env exists.

For ``snakemake --sdm conda`` the envs must install what a pip install of the project
installs: each env lists python, pip and, under ``pip:``, packages that pyproject.toml's
``dependencies`` pin exactly, with the same pin.  Pure Python (tomllib + yaml): no
network, no conda.
"""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(?P<op>===|==|~=|!=|<=|>=|<|>)?"
                  r"\s*(?P<version>[^\s;,]*)")
_CONDA_PYTHON = re.compile(r"^python\s*(?:==?|\s)\s*(\d+)\.(\d+)")
_CONDA_LINE = re.compile(r"^(?P<indent>\s*)conda:\s*(?P<rest>.*)$")
_RULE = re.compile(r"^(?:rule|checkpoint)\s+(?P<name>\w+)\s*:")
_DIRECTIVE = re.compile(r"^\s+(?P<name>\w+):")
_LITERAL = re.compile(r"""^(?P<q>["'])(?P<path>[^"']+)(?P=q)\s*(?:#.*)?$""")
_RUNS_CODE = {"script", "shell", "run", "notebook", "wrapper"}


def normalize(name: str) -> str:
    """PEP 503 name: case, ``-``, ``_`` and ``.`` do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject(root: Path) -> tuple[dict[str, str], set[str], str]:
    """(exact pins of [project].dependencies by normalized name, names pinned otherwise, requires-python)."""
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins, loose = {}, set()
    for dep in project["dependencies"]:
        m = _PIN.match(dep.strip())
        if m is None:
            raise ValueError(f"pyproject.toml: cannot parse dependency {dep!r}")
        if m["op"] == "==" and m["version"] and "*" not in m["version"]:
            pins[normalize(m["name"])] = m["version"]
        else:
            loose.add(normalize(m["name"]))
    return pins, loose, project.get("requires-python", "")


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text))


def python_allowed(version: tuple[int, int], requires: str) -> bool:
    """Whether a major.minor Python satisfies ``requires-python`` (compared on major.minor)."""
    for clause in filter(None, (c.strip() for c in requires.split(","))):
        m = re.match(r"^(===|==|~=|!=|<=|>=|<|>)\s*([\d.*]+)$", clause)
        if m is None:
            raise ValueError(f"pyproject.toml: cannot parse requires-python clause {clause!r}")
        op, bound = m[1], _version_tuple(m[2])[:2]
        ok = {
            "<": version < bound, "<=": version <= bound, ">": version > bound, ">=": version >= bound,
            "~=": version >= bound, "==": version == bound, "===": version == bound, "!=": version != bound,
        }[op]
        if not ok:
            return False
    return True


def env_files(root: Path) -> list[Path]:
    return sorted((root / "envs").glob("*.yaml"))


def rule_files(root: Path) -> list[Path]:
    files = sorted((root / "workflow" / "rules").glob("*.smk"))
    return [root / "Snakefile", *files] if (root / "Snakefile").exists() else files


def rule_envs(root: Path) -> tuple[list[tuple[Path, int, str, Path]], list[str]]:
    """Every ``conda:`` directive of the Snakefile and workflow/rules/*.smk.

    Returns ((rule file, line, rule name, resolved env path), problems); a path is
    resolved relative to the file that names it, as Snakemake does.
    """
    found, problems = [], []
    for smk in rule_files(root):
        lines = smk.read_text(encoding="utf-8").splitlines()
        rule = "?"
        for i, line in enumerate(lines):
            if m := _RULE.match(line):
                rule = m["name"]
            m = _CONDA_LINE.match(line)
            if m is None or not m["indent"]:
                continue
            value, lineno = m["rest"].strip(), i + 1
            if not value:  # the value is on the next non-empty line
                rest = [(j, text.strip()) for j, text in enumerate(lines[i + 1:], i + 2) if text.strip()]
                lineno, value = rest[0] if rest else (lineno, "")
            literal = _LITERAL.match(value)
            where = f"{smk.relative_to(root)}:{lineno} (rule {rule})"
            if literal is None:
                problems.append(f"{where}: conda: {value!r} is not a literal path to an env file")
                continue
            found.append((smk, lineno, rule, (smk.parent / literal["path"]).resolve()))
    return found, problems


def rules_without_env(root: Path) -> list[str]:
    """Rules that run code (``script:``, ``shell:``, ``run:``...) but name no conda env."""
    missing = []
    for smk in rule_files(root):
        rule, directives = None, set()
        for line in [*smk.read_text(encoding="utf-8").splitlines(), "EOF"]:
            if line.lstrip().startswith("#"):
                continue
            if line.strip() and not line[0].isspace():  # a new top-level statement closes the rule
                if rule and directives & _RUNS_CODE and "conda" not in directives:
                    missing.append(f"{smk.relative_to(root)}: rule {rule} has no conda: directive")
                m = _RULE.match(line)
                rule, directives = (m["name"] if m else None), set()
            elif rule and (d := _DIRECTIVE.match(line)) and len(line) - len(line.lstrip()) == 4:
                directives.add(d["name"])
    return missing


def check_env(path: Path, root: Path, pins: dict[str, str], loose: set[str], requires_python: str) -> list[str]:
    """Every way ``path`` disagrees with pyproject.toml."""
    name = path.relative_to(root)
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        return [f"{name}: not valid YAML ({e})"]
    deps = (spec or {}).get("dependencies")
    if not isinstance(deps, list):
        return [f"{name}: no dependencies list"]
    problems, pip_lists, has_pip, pythons = [], [], False, []
    for dep in deps:
        if isinstance(dep, dict) and set(dep) == {"pip"}:
            pip_lists.append(dep["pip"] or [])
        elif isinstance(dep, str) and normalize(dep.split("=")[0].split()[0]) == "pip":
            has_pip = True
        elif isinstance(dep, str) and (m := _CONDA_PYTHON.match(dep.strip())):
            pythons.append((int(m[1]), int(m[2])))
        else:
            problems.append(f"{name}: conda dependency {dep!r}: only python and pip come from conda; "
                            "Python packages go under pip:, pinned as in pyproject.toml")
    if len(pythons) != 1:
        problems.append(f"{name}: needs exactly one pinned python (e.g. python=3.11), found {len(pythons)}")
    elif requires_python and not python_allowed(pythons[0], requires_python):
        problems.append(f"{name}: python={'.'.join(map(str, pythons[0]))} is outside pyproject.toml's "
                        f"requires-python {requires_python!r}")
    if not has_pip:
        problems.append(f"{name}: pip is not a dependency (needed for the pip: section)")
    seen = set()
    for req in (r for lst in pip_lists for r in lst):
        req = str(req).strip()
        if req.startswith(("-e ", "--editable")):  # the project itself, e.g. `-e ../`
            target = (path.parent / req.split(None, 1)[-1].split("=", 1)[-1]).resolve()
            if target != root.resolve():
                problems.append(f"{name}: {req!r} is not the project ({target} is not {root.resolve()})")
            continue
        m = _PIN.match(req)
        if m is None or req.startswith("-"):
            problems.append(f"{name}: pip requirement {req!r} is not `<name>==<version>`")
            continue
        pkg = normalize(m["name"])
        if pkg in seen:
            problems.append(f"{name}: {m['name']} is listed twice")
        seen.add(pkg)
        if pkg not in pins:
            why = "does not pin it exactly" if pkg in loose else "does not list it in [project] dependencies"
            problems.append(f"{name}: {m['name']}: pyproject.toml {why}")
        elif m["op"] != "==" or m["version"] != pins[pkg]:
            problems.append(f"{name}: {req!r} differs from pyproject.toml's {m['name']}=={pins[pkg]}")
    return problems


def check_repo(root: Path) -> list[str]:
    """Every disagreement between envs/*.yaml, pyproject.toml and the rules' conda: directives."""
    pins, loose, requires_python = pyproject(root)
    envs = env_files(root)
    problems = [] if envs else [f"{root / 'envs'}: no *.yaml environment"]
    for env in envs:
        problems += check_env(env, root, pins, loose, requires_python)
    used, rule_problems = rule_envs(root)
    problems += rule_problems
    for smk, lineno, rule, env in used:
        if not env.is_file():
            problems.append(f"{smk.relative_to(root)}:{lineno} (rule {rule}): conda env {env} does not exist")
    named = {env for *_, env in used}
    problems += [f"{env.relative_to(root)}: no rule uses it" for env in envs if env.resolve() not in named]
    problems += rules_without_env(root)
    return problems


# --------------------------------------------------------------------------- the repository


def test_envs_agree_with_pyproject_and_rules():
    assert check_repo(ROOT) == []


def test_every_rule_that_runs_code_names_an_existing_env():
    used, problems = rule_envs(ROOT)
    assert problems == []
    rules = {rule for _, _, rule, _ in used}
    assert {"build_corpus", "import_model", "quantize", "transcribe", "score", "aggregate"} <= rules
    assert all(env.is_file() and env.parent == (ROOT / "envs").resolve() for *_, env in used)


# --------------------------------------------------------------------------- the checker can fail


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    """What the checker reads (pyproject.toml, envs/, the rule files), in a temporary directory."""
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copy2(ROOT / "Snakefile", tmp_path / "Snakefile")
    shutil.copytree(ROOT / "envs", tmp_path / "envs")
    shutil.copytree(ROOT / "workflow" / "rules", tmp_path / "workflow" / "rules")
    assert check_repo(tmp_path) == []
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _pip_line(env: Path, pkg: str | None = None) -> tuple[str, str]:
    """The pip line of ``pkg`` in ``env`` (default: the first pinned one) and its package name."""
    pattern = rf"^\s+- {re.escape(pkg)}==" if pkg else r"^\s+- [A-Za-z0-9][A-Za-z0-9._-]*=="
    line = next(ln for ln in env.read_text(encoding="utf-8").splitlines() if re.match(pattern, ln))
    return line, line.split("- ", 1)[1].split("==")[0].strip()


def test_a_different_pin_in_an_env_fails(repo_copy):
    env = repo_copy / "envs" / "report.yaml"
    line, pkg = _pip_line(env)
    _edit(env, line, re.sub(r"==\S+", "==0.0.1", line))
    problems = check_repo(repo_copy)
    assert len(problems) == 1 and "envs/report.yaml" in problems[0] and pkg in problems[0], problems


def test_a_changed_pin_in_pyproject_fails_every_env_that_lists_it(repo_copy):
    pins, _, _ = pyproject(ROOT)
    listing = [e.name for e in env_files(ROOT) if "numpy==" in e.read_text(encoding="utf-8")]
    _edit(repo_copy / "pyproject.toml", f'"numpy=={pins["numpy"]}"', '"numpy==1.0.0"')
    problems = check_repo(repo_copy)
    assert listing and len(problems) == len(listing), problems
    assert all("numpy==1.0.0" in p for p in problems)


@pytest.mark.parametrize("requirement, expect", [
    ("requests==2.34.2", "requests: pyproject.toml does not list it"),  # not a dependency of the project
    ("pytest==9.2.0", "pytest: pyproject.toml does not list it"),  # only in the test extra
    ("numpy", "differs from pyproject.toml's numpy=="),  # unpinned
    ("numpy>=2", "differs from pyproject.toml's numpy=="),  # a range
])
def test_an_extra_or_unpinned_package_fails(repo_copy, requirement, expect):
    env = repo_copy / "envs" / "report.yaml"
    line, _ = _pip_line(env, "numpy")
    indent = line.split("- ")[0]
    if requirement.startswith("numpy"):
        _edit(env, line, f"{indent}- {requirement}")
    else:
        _edit(env, line, f"{line}\n{indent}- {requirement}")
    problems = check_repo(repo_copy)
    assert len(problems) == 1 and "envs/report.yaml" in problems[0] and expect in problems[0], problems


def test_a_conda_package_or_a_missing_python_fails(repo_copy):
    env = repo_copy / "envs" / "data.yaml"
    _edit(env, "  - python=3.11\n", "  - ffmpeg=6\n")
    problems = check_repo(repo_copy)
    assert any("'ffmpeg=6'" in p for p in problems) and any("exactly one pinned python" in p for p in problems)


def test_a_python_outside_requires_python_fails(repo_copy):
    _edit(repo_copy / "envs" / "data.yaml", "python=3.11", "python=3.10")
    problems = check_repo(repo_copy)
    assert len(problems) == 1 and "requires-python" in problems[0], problems


def test_a_rule_naming_a_missing_env_fails(repo_copy):
    (repo_copy / "envs" / "report.yaml").rename(repo_copy / "envs" / "reporting.yaml")
    problems = check_repo(repo_copy)
    assert any("rule aggregate" in p and "report.yaml does not exist" in p for p in problems), problems
    assert any("envs/reporting.yaml: no rule uses it" in p for p in problems), problems


def test_a_rule_without_env_fails(repo_copy):
    smk = repo_copy / "workflow" / "rules" / "score.smk"
    text = smk.read_text(encoding="utf-8")
    smk.write_text(re.sub(r"    conda:\n        \S+\n", "", text), encoding="utf-8")
    problems = check_repo(repo_copy)
    assert any("rule score has no conda: directive" in p for p in problems), problems
