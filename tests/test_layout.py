"""The code's shape: no import cycles among the project's modules, no sys.path edits."""
import ast

from tests.conftest import ROOT

PACKAGES = ("models", "utils", "run_scripts")


def project_modules() -> dict[str, ast.Module]:
    files = [*ROOT.glob("*.py"), *(p for pkg in PACKAGES for p in (ROOT / pkg).glob("*.py"))]
    return {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): ast.parse(p.read_text())
            for p in files}


def imports_of(tree: ast.Module, known: set[str]) -> set[str]:
    """Project modules imported anywhere in ``tree`` (top level or inside functions)."""
    out = set()
    for node in ast.walk(tree):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
                 if isinstance(node, ast.ImportFrom) and node.module else [])
        out |= {n for n in names if n in known}
    return out


def test_no_import_cycles():
    mods = project_modules()
    graph = {m: imports_of(tree, set(mods)) - {m} for m, tree in mods.items()}
    # A package's __init__ importing its own submodules is not a cycle of interest.
    graph = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for d in graph[m]:
            assert state.get(d) != 1, "import cycle: " + " -> ".join([*path, m, d])
            if d not in state:
                visit(d, [*path, m])
        state[m] = 2
    for m in graph:
        if m not in state:
            visit(m, [])


def test_no_sys_path_edits():
    offenders = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
                 if "sys.path.insert" in p.read_text() or "sys.path.append" in p.read_text()]
    assert offenders == ["tests/test_layout.py"]
