"""Forward references in the book's reading order.

The reading order is the sidebar's (`nbs/sidebar.yml`). For each notebook this lists the `scale_sae` names its code
uses (every `from scale_sae.M import name`, every `scale_sae.M.name`, every `import scale_sae.M`) and the chapter
that defines each, and flags a use whose defining chapter comes later. It checks the library too: an exported
module that imports (at the top or inside a function) a module taught later in the book is a forward reference of
the library itself.

    python tests/forward_refs.py            # the forward references, one per line; exit 1 if any
    python tests/forward_refs.py --list     # every notebook's uses and where each is defined
    python tests/forward_refs.py --pointers # prose that names a later chapter ("chapter 04 puts it to the test")

An appendix (a notebook named `A<n>_...`, after the story) documents machinery the main line uses as a black box:
atomic files, the allocator, the command line. Any chapter may use what an appendix defines; an appendix itself
uses only what comes before it.

A pointer is a signpost, not a use: a chapter may say where a question is answered. The check fails on uses only;
`--pointers` lists the signposts, so that each can be read for one that leans on what it points to.
"""
import ast, json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'


def reading_order():
    """Notebook names in the order the sidebar lists them, without the landing page: like a README, `index.ipynb`
    shows the finished library before any chapter builds it."""
    names = re.findall(r'^\s*-\s+(?:href:\s*)?([\w.-]+\.ipynb)\s*$', (NBS/'sidebar.yml').read_text(), re.M)
    return [n for n in names if n != 'index.ipynb']


def is_appendix(nb):
    return re.match(r'A\d', nb) is not None


def code_cells(nb_path):
    for cell in json.loads(nb_path.read_text())['cells']:
        if cell['cell_type'] != 'code': continue
        src = cell['source'] if isinstance(cell['source'], str) else ''.join(cell['source'])
        # shell escapes and magics are not Python
        src = '\n'.join('' if l.lstrip().startswith(('!', '%')) else l for l in src.splitlines())
        try: yield src, ast.parse(src)
        except SyntaxError: continue


def exported(src):
    return re.search(r'^#\|\s*export', src, re.M) is not None


def module_of(nb_path):
    for src, _ in code_cells(nb_path):
        m = re.search(r'^#\|\s*default_exp\s+(\S+)', src, re.M)
        if m: return m.group(1)


def definitions(nb_path):
    "Top-level names an exported cell of this notebook defines (patched methods count under their own name)."
    names = set()
    for src, tree in code_cells(nb_path):
        if not exported(src): continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                    for n in ast.walk(t):
                        if isinstance(n, ast.Name): names.add(n.id)
    return names


def uses(trees):
    "(module, name) pairs: `from scale_sae.m import name`, `scale_sae.m.name`, and (module, None) for `import`."
    found = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('scale_sae.'):
                mod = node.module.split('.')[1]
                found |= {(mod, a.name) for a in node.names if a.name != '*'} or {(mod, None)}
            elif isinstance(node, ast.ImportFrom) and node.module == 'scale_sae':
                found |= {(a.name, None) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level and node.module:  # inside the package
                found |= {(node.module.split('.')[0], a.name) for a in node.names if a.name != '*'}
            elif isinstance(node, ast.Import):
                found |= {(a.name.split('.')[1], None) for a in node.names if a.name.startswith('scale_sae.')}
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                  and isinstance(node.value.value, ast.Name) and node.value.value.id == 'scale_sae'):
                found.add((node.value.attr, node.attr))
    return found


def check(verbose=False):
    order = reading_order()
    missing = sorted({p.name for p in NBS.glob('*.ipynb')} - set(order) - {'index.ipynb'})
    position = {nb: i for i, nb in enumerate(order)}
    home_of_module, home_of_name = {}, {}
    for nb in order:
        mod = module_of(NBS/nb)
        if mod: home_of_module[mod] = nb
        for name in definitions(NBS/nb): home_of_name.setdefault((mod, name), nb)

    def home(mod, name):
        return home_of_name.get((mod, name)) or home_of_module.get(mod)

    problems = [f'{nb}: not in nbs/sidebar.yml, so it has no place in the reading order' for nb in missing]
    for nb in order:
        here = position[nb]
        used = sorted(uses(t for _, t in code_cells(NBS/nb)), key=lambda u: (u[0], u[1] or ''))
        if verbose and used:
            print(f'{nb}')
            for mod, name in used:
                print(f'    {mod}.{name or "*"}  <- {home(mod, name) or "?"}')
        for mod, name in used:
            h = home(mod, name)
            if h is None: problems.append(f'{nb}: uses scale_sae.{mod}.{name or ""}, which no chapter defines')
            elif position[h] > here and not is_appendix(h):
                problems.append(f'{nb}: uses scale_sae.{mod}.{name or ""} from {h}, which comes later')
    # the library: a module may only import modules taught before (or with) it
    for mod, nb in home_of_module.items():
        path = ROOT/'scale_sae'/f'{mod.replace(".", "/")}.py'
        if not path.exists(): continue
        for dep, _ in uses([ast.parse(path.read_text())]):
            h = home_of_module.get(dep)
            if h and position[h] > position[nb] and not is_appendix(h):
                problems.append(f'scale_sae/{mod}.py (from {nb}) imports scale_sae.{dep} from {h}, which comes later')
    return list(dict.fromkeys(problems))


def pointers():
    "(notebook, later chapter, context) for each markdown link or 'chapter NN' that names a chapter further on."
    order = reading_order(); position = {nb[:-len('.ipynb')]: i for i, nb in enumerate(order)}
    found = []
    for i, nb in enumerate(order):
        for cell in json.loads((NBS/nb).read_text())['cells']:
            if cell['cell_type'] != 'markdown': continue
            text = cell['source'] if isinstance(cell['source'], str) else ''.join(cell['source'])
            named = [(m, m.group(1)) for m in re.finditer(r'\]\((?:https://[\w.-]+/[\w-]+/)?(\w+)\.html', text)]
            named += [(m, next((s for s in position if s.startswith(m.group(1) + '_')), None))
                      for m in re.finditer(r'\b(?:[Cc]hapters?|appendix) ((?:0\d|A\d)[a-e]?)\b', text)]
            for m, stem in named:
                if stem in position and position[stem] > i:
                    found.append((nb, stem, ' '.join(text[max(0, m.start() - 70):m.end() + 30].split())))
    return found


if __name__ == '__main__':
    if '--pointers' in sys.argv:
        for nb, stem, context in pointers(): print(f'{nb} -> {stem}: ...{context}...')
        sys.exit(0)
    problems = check(verbose='--list' in sys.argv)
    print('\n'.join(problems) if problems else 'no forward references')
    sys.exit(1 if problems else 0)
