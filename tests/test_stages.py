"""The stage shells: one module per DVC stage, dvc.yaml's code deps = what each stage imports,
the core never imports a shell, and every stage fails with one clean line instead of a traceback."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recmoo_dag.cli import main
from tests.conftest import REPO, write_params

PACKAGE = REPO / "recmoo_dag"
STAGES = list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
# Schema and messages only: a change there does not change what a stage writes.
NOT_DEPS = {"recmoo_dag.config", "recmoo_dag.errors"}
SHELLS = ("recmoo_dag.stages", "recmoo_dag.cli", "recmoo_dag.ops", "recmoo_dag.defs")
ORCHESTRATION = ("dagster", "dvc", "great_expectations")


def module_file(name: str) -> Path | None:
    path = REPO / (name.replace(".", "/") + ".py")
    if path.is_file():
        return path
    package = REPO / name.replace(".", "/") / "__init__.py"
    return package if package.is_file() else None


def project_imports(path: Path) -> set[str]:
    """Every recmoo_dag module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("recmoo_dag"):
            for alias in node.names:  # `from recmoo_dag.stages import train` names a module
                sub = f"{node.module}.{alias.name}"
                found.add(sub if module_file(sub) else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("recmoo_dag")}
    return {name for name in found if module_file(name) and module_file(name).name != "__init__.py"}


def closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen or name in NOT_DEPS:
            continue
        seen.add(name)
        todo.extend(project_imports(module_file(name)))
    return seen


def test_every_dvc_stage_has_a_stage_module_and_a_cli_verb():
    for name in STAGES:
        assert (PACKAGE / "stages" / f"{name}.py").is_file(), name
    assert sorted(p.stem for p in (PACKAGE / "stages").glob("*.py") if p.stem != "__init__") == sorted(STAGES)
    help_text = subprocess.run([sys.executable, "-m", "recmoo_dag.cli", "--help"], capture_output=True, text=True,
                               cwd=REPO, check=True).stdout
    assert all(name in help_text for name in STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_code_deps_are_exactly_what_the_stage_imports(stage):
    declared = {d for d in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["deps"]
                if d.endswith(".py")}
    imported = {module_file(m).relative_to(REPO).as_posix() for m in closure(f"recmoo_dag.stages.{stage}")}
    assert declared == imported, f"missing {sorted(imported - declared)}, not read {sorted(declared - imported)}"


def test_the_core_imports_no_shell_and_no_orchestrator():
    for path in sorted(PACKAGE.glob("*.py")):
        name = f"recmoo_dag.{path.stem}"
        if name.startswith(SHELLS):
            continue
        shells = sorted(m for m in project_imports(path) if m.startswith(SHELLS))
        assert not shells, f"{path.name} imports {shells}"
        if path.stem != "validation":  # the one module that wraps great-expectations
            tops = {node.module.split(".")[0] for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, ast.ImportFrom) and node.module}
            tops |= {a.name.split(".")[0] for node in ast.walk(ast.parse(path.read_text()))
                     if isinstance(node, ast.Import) for a in node.names}
            assert not tops & set(ORCHESTRATION), f"{path.name} imports {tops & set(ORCHESTRATION)}"


def test_stage_mains_stay_thin():
    for path in sorted((PACKAGE / "stages").glob("*.py")):
        tree = ast.parse(path.read_text())
        mains = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "main"]
        if path.name == "__init__.py":
            continue
        assert len(mains) == 1, path.name
        body = mains[0].body[1:] if isinstance(mains[0].body[0], ast.Expr) else mains[0].body  # docstring
        lines = mains[0].end_lineno - body[0].lineno + 1
        assert lines <= 30, f"{path.name}: main() has {lines} lines"


@pytest.mark.parametrize("stage", [s for s in STAGES if s != "fetch"])
def test_every_stage_without_its_inputs_fails_with_one_clean_line(stage, tmp_path, monkeypatch, capsys):
    """In an empty project each stage exits 1 with one 'recmoo <stage>: error: ...' line."""
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)
    assert main([stage]) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"recmoo {stage}: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out


def test_a_bad_params_file_is_one_clean_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, {"deploy": {"min_ratio": {"ndcg@10": 0.98}}})
    assert main(["deploy"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("recmoo deploy: error: params.yaml: deploy.min_ratio.ndcg@10") and err.count("\n") == 1


def test_fetch_of_a_missing_local_log_is_one_clean_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, {"data": {"source": "local", "dataset_dir": "data/raw/mine"}})
    assert main(["fetch"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("recmoo fetch: error: data.dataset_dir data/raw/mine: no such folder") and err.count("\n") == 1
