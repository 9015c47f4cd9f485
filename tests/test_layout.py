"""The repository's layout rules: a family package is used only through its `__init__`, and every citation in
the repository points inside it (docs/protocol.md#method-families)."""

import ast
import re
import subprocess
from pathlib import Path

from clcore.methods import FAMILIES

REPO = Path(__file__).resolve().parents[1]
PIPELINE_FILES = ["Snakefile", *map(str, (REPO / "rules").glob("*.smk"))]


def tracked(*patterns) -> list[Path]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", *patterns], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.split()
    return [REPO / p for p in out if (REPO / p).exists()]


def imported_modules(path: Path) -> list[str]:
    """Absolute names of the modules a Python file imports (relative imports resolved)."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            module = f"{base}.{node.module}" if node.level and node.module else (node.module if not node.level else base)
            names += [module] + [f"{module}.{a.name}" for a in node.names]
    return names


def test_no_module_outside_a_family_imports_its_internals():
    offenders = []
    for path in tracked("clcore/*.py", "workflow/*.py"):
        for family in FAMILIES:
            package = REPO / "clcore" / "methods" / family
            if package in path.parents:
                continue
            for name in imported_modules(path):
                module = name.removeprefix(f"clcore.methods.{family}.")
                if module != name and (package / f"{module.split('.')[0]}.py").exists():
                    offenders.append(f"{path.relative_to(REPO)} imports {name}")
    for path in map(Path, PIPELINE_FILES):
        for family in FAMILIES:
            for match in re.finditer(rf"clcore\.methods\.{family}\.(\w+)", path.read_text()):
                offenders.append(f"{Path(path).relative_to(REPO)} imports {match.group(0)}")
    assert not offenders, "\n".join(offenders)


SPEC = re.compile(r"(?<![\w/.-])(?:specs/)?(baselines|ser|bir|wscl|akr|ar1|datasets|pipeline|performance|DESIGN)\.md"
                  r"|§|fidelity note")
HEADING = re.compile(r"^#{1,6} (.+)$", re.M)
CITED = re.compile(r"((?:\.\./|docs/)?[\w-]+\.md)#([\w-]+)")


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(h) for h in HEADING.findall(page.read_text())}


def test_no_citation_of_a_file_outside_the_repository():
    """Code, config and tests cite the project's docs/, never the working notes the project started from."""
    offenders = []
    for path in tracked(":!docs/*", ":!tests/test_layout.py"):
        if path.suffix in {".py", ".smk", ".yaml", ".csv", ".json", ".md", ".rst", ".toml", ""} and path.is_file():
            for number, line in enumerate(path.read_text(errors="ignore").splitlines(), 1):
                if SPEC.search(line):
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:100]}")
    assert not offenders, "\n".join(offenders)


def test_every_cited_docs_anchor_exists():
    missing = []
    for path in tracked():
        if path.suffix not in {".py", ".smk", ".yaml", ".csv", ".json", ".md"} and path.name != "Snakefile":
            continue
        for page, anchor in CITED.findall(path.read_text(errors="ignore")):
            target = (path.parent / page) if path.parent.name == "docs" else REPO / page  # docs/ links relatively
            if not target.exists() or anchor not in anchors(target):
                missing.append(f"{path.relative_to(REPO)}: {page}#{anchor}")
    assert not missing, "\n".join(missing)
