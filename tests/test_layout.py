"""The package's shape: stages import downwards only, plugins are never imported by the core."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "narformer_tvm"
MAX_LINES = 500


def _imports() -> dict[str, set[str]]:
    """module -> narformer_tvm modules it imports at run time (TYPE_CHECKING blocks left out)."""
    edges = {}
    for path in PACKAGE.rglob("*.py"):
        mod = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for i in ast.walk(tree) if isinstance(i, ast.If) and "TYPE_CHECKING" in ast.unparse(i.test)
                       for n in ast.walk(i)}
        deps = set()
        for n in ast.walk(tree):
            if id(n) in typing_only:
                continue
            if isinstance(n, ast.ImportFrom) and n.module:
                deps.add(n.module)
                deps |= {f"{n.module}.{a.name}" for a in n.names}  # `from pkg import module`
            elif isinstance(n, ast.Import):
                deps |= {a.name for a in n.names}
        edges[mod] = deps
    return {m: {d for d in deps if d in edges and d != m} for m, deps in edges.items()}, edges


def test_the_import_graph_has_no_cycle():
    edges, _ = _imports()
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for d in sorted(edges[m]):
            assert state.get(d) != 1, "import cycle: " + " -> ".join(path + [d])
            if d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])


def test_the_core_never_imports_its_plugins():
    _, raw = _imports()
    offenders = {m for m, deps in raw.items() if any(d.startswith("narformer_plugins") for d in deps)}
    assert not offenders


def test_no_module_is_a_catch_all():
    sizes = {p.relative_to(PACKAGE): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert not {p: n for p, n in sizes.items() if n > MAX_LINES}
