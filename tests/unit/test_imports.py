"""The package boundaries: the daemon and the workers meet only in ``contract``."""

from __future__ import annotations

import ast
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]


def imported_packages(package: str) -> dict[str, set[str]]:
    """For each module of ``package``: the top-level packages it imports (lazily or not)."""
    found = {}
    for path in sorted((REPOSITORY / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(REPOSITORY))] = names
    return found


def test_the_daemon_and_the_workers_meet_only_in_the_contract():
    crossings = [
        (module, name)
        for package, forbidden in (
            ("daemon", {"workers"}),
            ("workers", {"daemon"}),
            ("contract", {"daemon", "workers"}),
        )
        for module, names in imported_packages(package).items()
        for name in names & forbidden
    ]
    assert crossings == []


def test_the_daemon_and_the_contract_import_no_model_library():
    heavy = {"torch", "whisper", "transformers", "ctranslate2", "faster_whisper", "onnxruntime", "sentencepiece"}
    for package in ("daemon", "contract"):
        for module, names in imported_packages(package).items():
            assert not names & heavy, (module, names & heavy)


def test_only_the_ray_bridge_and_its_task_import_ray():
    """The local backend never imports Ray: not the daemon, not the contract, not a stage worker."""
    importers = sorted(
        module
        for package in ("daemon", "contract", "workers")
        for module, names in imported_packages(package).items()
        if "ray" in names
    )
    assert importers == ["workers/cluster.py", "workers/remote.py"]


def test_the_folder_table_in_the_docs_names_every_module_and_no_other():
    """docs/development.md's folder table is kept in step with the tree (it drifted once)."""
    import re

    text = (REPOSITORY / "docs" / "development.md").read_text(encoding="utf-8")
    for package in ("contract", "daemon", "workers"):
        (row,) = [line for line in text.splitlines() if line.startswith(f"| `{package}/` |")]
        named = set(re.findall(r"`([a-z_0-9]+)`", row.split("|")[2]))
        modules = {path.stem for path in (REPOSITORY / package).glob("*.py") if path.stem != "__init__"}
        assert modules <= named, f"{package}: not in the table: {sorted(modules - named)}"
        assert not {name for name in named if (REPOSITORY / package / f"{name}.py").exists()} - modules
    bench = [line for line in text.splitlines() if line.startswith("| `bench/` |")][0]
    assert {path.name for path in (REPOSITORY / "bench").iterdir() if path.suffix in (".py", ".sh")} <= set(
        re.findall(r"`([a-z_]+\.(?:py|sh))`", bench)
    )


def our_imports() -> dict[str, set[str]]:
    """For each of our modules (``workers.cues``): the modules of ours it imports, lazily or not."""
    graph: dict[str, set[str]] = {}
    for package in ("contract", "daemon", "workers"):
        for path in sorted((REPOSITORY / package).glob("*.py")):
            module = f"{package}.{path.stem}"
            names: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names |= {alias.name for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names.add(node.module)
                    names |= {f"{node.module}.{alias.name}" for alias in node.names}
            graph[module] = {name for name in names if name.split(".")[0] in ("contract", "daemon", "workers")}
    return {module: {name for name in names if name in graph and name != module} for module, names in graph.items()}


def test_no_module_of_ours_imports_itself_round_a_circle():
    graph, done, path = our_imports(), set(), []

    def visit(module: str) -> None:
        assert module not in path, " → ".join([*path[path.index(module) :], module])
        if module in done:
            return
        path.append(module)
        for name in sorted(graph[module]):
            visit(name)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    assert len(done) == len(graph) > 60


def test_the_stage_files_and_the_subtitle_layout_need_no_model_library():
    """The subtitle stage and the daemon-side tests read the stage files without torch or CTranslate2."""
    heavy = {"torch", "whisper", "transformers", "ctranslate2", "faster_whisper", "onnxruntime", "sentencepiece"}
    found = imported_packages("workers")
    for module in ("segments", "sentences", "cues", "gpu", "subtitle", "common"):
        assert not found[f"workers/{module}.py"] & heavy, module
