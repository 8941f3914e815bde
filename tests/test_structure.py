"""The book's shape: no chapter uses what a later one teaches, and no module of `scale_sae` imports one that imports
it back (at the top or inside a function), so every module imports on its own, in any order."""
import ast, subprocess, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from forward_refs import ROOT, check, uses

MODULES = sorted(p.stem for p in (ROOT/'scale_sae').glob('*.py') if not p.stem.startswith('_'))


def import_graph():
    "module -> the scale_sae modules it imports anywhere in its source."
    return {m: {dep for dep, _ in uses([ast.parse((ROOT/'scale_sae'/f'{m}.py').read_text())]) if dep != m}
            for m in MODULES}


def test_no_forward_references():
    assert check() == []


def test_the_import_graph_has_no_circle():
    graph = import_graph()
    def circle_from(start):
        "A path start -> ... -> start, or None."
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for dep in graph.get(node, ()):
                if dep == start: return path + [start]
                if dep not in seen: seen.add(dep); stack.append((dep, path + [dep]))
    circles = [c for c in map(circle_from, MODULES) if c]
    assert not circles, "modules that import each other: " + "; ".join(" -> ".join(c) for c in circles)


def test_the_scan_finds_lazy_and_relative_imports():
    "The scan above can fail: it finds an import inside a function (cli's of runs) and a relative one (core's of moe)."
    graph = import_graph()
    assert 'runs' in graph['cli'] and 'lineup' in graph['cli'] and 'moe' in graph['core']


def test_every_module_imports_on_its_own():
    # one interpreter (torch is imported once), every module imported afresh with none of the package loaded before it
    script = (
        "import importlib, sys, torch\n"
        f"for name in {MODULES!r} + {MODULES[::-1]!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'scale_sae' or m.startswith('scale_sae.')]: del sys.modules[loaded]\n"
        "    importlib.import_module('scale_sae.' + name)\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == 'ok', done.stderr[-3000:]
