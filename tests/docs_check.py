"""Check the book's pages the way the deploy workflow builds them, and fail when one is broken.

1. `nbdev_proc_nbs` (CI=true, as on the deploy runner) processes a copy of the project: what `nbdev_docs` hands
   to Quarto. It re-executes every cell holding an import; the check fails if that raises, or if it changes an
   output the notebook stores (compared with the same processing minus the execution).
2. Each processed notebook becomes a page the way Quarto makes one (nothing executed): the markdown Quarto writes
   for it (cells in divs, the output Quarto picks from each MIME bundle, `#| echo/include/output` obeyed, nbdev's
   API docs as the markdown they are), rendered by pandoc with MathJax, in Quarto's 800 px body column with the
   book's styles.css and _quarto.yml's code-overflow. It opens in headless Chromium, with the vega libraries and
   MathJax that the page asks cdn.jsdelivr.net for served from tests/docs/node_modules.
3. Per page: a title; no heading that is really a paragraph; no error or traceback output; no progress-bar
   debris; every chart drawn with marks in it, and stored with a static image too (tests/static_charts.py adds
   them); no maths left as raw `$...$`, no Quarto attribute text (`{target=...}`, `:::`) and no markdown
   backticks in the rendered text;
   no horizontal overflow of the page; no output line cut at the right edge; no broken image.
4. The main job's report: `report.html` rebuilt from a real `scale-sae compare` run's results.json
   (nbs/results/compare-tiny.json) and opened like a page.

    python tests/docs_check.py [--nbs DIR] [--out DIR]    # exit 0 when every page passes, 1 otherwise
    python tests/docs_check.py --processing-only          # step 1 alone, as the deploy workflow runs it

Screenshots, the rendered HTML, the processed notebooks and report.json land in --out (default _docs_check/).
Cell numbers in the report count every cell of the stored notebook, from 0.
"""
import argparse, contextlib, json, os, re, shutil, signal, subprocess, sys, time, warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import static_charts

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT/'tests'/'docs'
MAX_HEADING_WORDS = 15
# tqdm's text bars: "42%|████▏     | 42/100 [00:01<00:02, 30.1it/s]", redrawn in place with a bare carriage return
PROGRESS = re.compile(r'\d+%\|.*\||[█▏▎▍▌▋▊▉]{2}|\d(?:it/s|s/it)\]|\r(?!\n)')
TRACEBACK = 'Traceback (most recent call last)'

def chromium_path():
    # Debian's chromium; the Chrome that GitHub's Ubuntu runners carry does as well
    for p in (os.environ.get('CHROMIUM'), shutil.which('chromium'), shutil.which('chromium-browser'),
              shutil.which('google-chrome')):
        if p and Path(p).exists(): return p

def missing_tools(browser=True):
    "What the check needs and this machine lacks (empty when it can run)."
    gaps = [] if shutil.which('nbdev_proc_nbs') else ['nbdev_proc_nbs (pip install -e ".[dev]")']
    if not browser: return gaps
    if not chromium_path(): gaps.append('chromium (apt-get install chromium)')
    if not shutil.which('pandoc'): gaps.append('pandoc (apt-get install pandoc)')
    if not shutil.which('node'): gaps.append('node')
    if not (TOOLS/'node_modules'/'playwright-core').exists(): gaps.append('tests/docs/node_modules (cd tests/docs && npm ci)')
    return gaps

def _text(v): return v if isinstance(v, str) else ''.join(v)

def _strip_directives(source):
    return '\n'.join(l for l in source.splitlines() if not re.match(r'^\s*#\|', l)).strip()

def _first_line(cell):
    lines = [l for l in _text(cell.get('source', '')).splitlines() if l.strip() and not l.lstrip().startswith('#|')]
    line = lines[0].strip() if lines else ''
    return line if len(line) <= 60 else line[:57] + '...'

## 1. the project copy and nbdev_proc_nbs

def _notebooks(nbs):
    "The notebooks nbdev renders: nbglob skips files and folders whose names start with `.` or `_`."
    return sorted(p for p in nbs.rglob('*.ipynb')
                  if not any(part[0] in '._' for part in p.relative_to(nbs).parts))

def _tracked(nbs):
    "Files of `nbs` a fresh clone would hold (not run outputs that git ignores); None outside a repository."
    r = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard', '-z', '.'], cwd=nbs, capture_output=True)
    if r.returncode: return None
    return [nbs/f for f in r.stdout.decode().split('\0') if f and (nbs/f).is_file()]

def make_project(nbs, dest, only=None):
    "A copy of the project holding `nbs` (or only the notebook `only` of it), the library, and settings.ini."
    from nbdev.config import get_config
    cfg = get_config(path=ROOT)
    dest.mkdir(parents=True)
    # copy2 keeps settings.ini's time: proc_nbs empties its cache when settings.ini is newer than it
    shutil.copy2(cfg.config_file, dest/cfg.config_file.name)
    shutil.copytree(cfg.lib_path, dest/cfg.lib_path.name, ignore=shutil.ignore_patterns('__pycache__'))
    files = _tracked(nbs) or [p for p in nbs.rglob('*') if p.is_file() and '.ipynb_checkpoints' not in p.parts]
    target = dest/cfg.nbs_path.relative_to(cfg.config_path)
    for f in files:
        if only is not None and f.suffix == '.ipynb' and f != only: continue
        (target/f.relative_to(nbs)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target/f.relative_to(nbs))
    return dest

def _env(stub_dir):
    # nbdev_proc_nbs installs Quarto (with sudo, then `pip install -e`) when it finds none; it only needs to find one
    stub_dir.mkdir(parents=True, exist_ok=True)
    stub = stub_dir/'quarto'
    stub.write_text('#!/bin/sh\necho "quarto is a stand-in here: the docs check renders without it" >&2\nexit 1\n')
    stub.chmod(0o755)
    return {**os.environ, 'CI': 'true', 'PATH': f"{stub_dir}{os.pathsep}{os.environ.get('PATH', '')}"}

def run_proc(project, env, timeout):
    "Run nbdev_proc_nbs in `project`; (exit status, its output)."
    # a process group of its own, so a timeout also stops the worker processes it spawned
    p = subprocess.Popen([shutil.which('nbdev_proc_nbs')], cwd=project, env=env, start_new_session=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out,_ = p.communicate(timeout=timeout)
        return p.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        return 124, p.communicate()[0]

def proc_error(log):
    "What a failed nbdev_proc_nbs log says: (the exception it raised, the source of the cell that raised it)."
    lines = log.rstrip().splitlines()
    starts = [i for i,l in enumerate(lines) if l.startswith('Exception: Error')]
    if not starts: return 'ended with: ' + ' | '.join(lines[-3:]), None
    s = starts[-1]
    # nbdev's own exception names the cell; the exception the cell raised is the last one logged before it
    causes = [l for l in lines[:s] if re.match(r'^[\w.]*(Error|Exception|Interrupt|Exit)\b', l)
              and not l.startswith('Exception: Error')]
    source = []
    for l in lines[s+1:]:
        if l.startswith('"""') or l.startswith('The above exception'): break
        source.append(l)
    return 'raised ' + (causes[-1] if causes else lines[s]), '\n'.join(source).strip()

def process_all(nbs, work, env, timeout):
    """Process every notebook as `nbdev_docs` does: (the project, {notebook: (what it raised, cell source) or None},
    a failure no notebook explains or None). When the run fails, each notebook it left unprocessed runs again on
    its own, so every failure is named and every other page still gets checked."""
    deadline = time.time() + timeout  # for the whole step, the reruns included: a bound on CI time
    project = make_project(nbs, work/'project')
    rc, log = run_proc(project, env, timeout)
    (work/'proc.log').write_text(log)
    proc = project/'_proc'
    errors = {nb: None for nb in _notebooks(nbs)}
    if rc == 0: return project, errors, None
    for nb in errors:
        rel = nb.relative_to(nbs)
        if (proc/rel).exists(): continue
        if time.time() > deadline - 10:
            errors[nb] = (f'did not finish it within the {timeout} s allowed for processing', None)
            continue
        alone = make_project(nbs, work/'alone'/rel.with_suffix(''), only=nb)
        rc1, log1 = run_proc(alone, env, deadline - time.time())
        (work/'alone'/rel.with_suffix('.log')).write_text(log1)
        if rc1 == 0 and (alone/'_proc'/rel).exists():
            (proc/rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(alone/'_proc'/rel, proc/rel)
        elif rc1 == 124: errors[nb] = (f'did not finish it within the {timeout} s allowed for processing', None)
        else: errors[nb] = proc_error(log1)
    unexplained = None if any(errors.values()) else f'nbdev_proc_nbs failed (exit {rc}) and {proc_error(log)[0]}'
    return project, errors, unexplained

## 2. what processing should have produced without executing anything

def dry_process(path):
    """nbdev's processors minus the execution, each cell tagged with its index in the stored notebook. Gives the
    cells the real run must line up with, the outputs it must leave alone, and the cells it executes."""
    from execnb.nbio import read_nb
    from nbdev.process import NBProcessor, nb_lang
    from nbdev.processors import FilterDefaults, exec_show_docs, _do_eval
    executed, mixed = [], []
    class would_execute(exec_show_docs):
        "Notes the cells `exec_show_docs` runs instead of running them."
        def begin(self): self.python = nb_lang(self.nb) == 'python'
        def __call__(self, cell):
            if not (self.python and self.nb.has_docs_): return
            if str(getattr(self.nb, 'frontmatter_', {}).get('skip_showdoc', False)).lower() in ('true', '1', 'yes'): return
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter('always')
                run = _do_eval(cell)
            if run and getattr(cell, 'orig_', None) is not None:
                executed.append(cell.orig_)
                if w: mixed.append(cell.orig_)
        def end(self): pass
    nb = read_nb(path)
    for i,c in enumerate(nb.cells): c.orig_ = i
    procs = [would_execute if p is exec_show_docs else p for p in FilterDefaults().procs()]
    NBProcessor(nb=nb, procs=procs).process()
    return nb, executed, mixed

def _canon(outputs):
    "Outputs as readers see them: text joined however it was split, execution counts ignored."
    res = []
    for o in outputs:
        o = dict(o)
        o.pop('execution_count', None)
        if 'text' in o: o['text'] = _text(o['text'])
        if 'traceback' in o: o['traceback'] = _text(o['traceback'])
        if 'data' in o: o['data'] = {k: v if isinstance(v, (dict, str)) else _text(v) for k,v in o['data'].items()}
        if o.get('output_type') in ('display_data', 'execute_result'): o.setdefault('metadata', {})
        res.append(o)
    return res

def lined_up(dry, real):
    "Execution adds, drops and edits no cell, so the two runs must agree cell for cell but for outputs."
    return [(c.cell_type, c.get('source')) for c in dry.cells] == [(c['cell_type'], _text(c.get('source', '')))
                                                                  for c in real['cells']]

def compare(stored, dry, real):
    "Outputs the processed notebook `real` holds that the `dry` processing of `stored` does not."
    problems = []
    for d,r in zip(dry.cells, real['cells']):
        i = getattr(d, 'orig_', None)
        if i is None or r['cell_type'] != 'code': continue
        if _canon(d.get('outputs', [])) != _canon(r.get('outputs', [])):
            problems.append(f"cell {i} `{_first_line(stored['cells'][i])}`: processing re-executed it and changed "
                            f"its stored output ({_summary(d.get('outputs', []))} -> {_summary(r.get('outputs', []))})")
    return problems

def _summary(outputs):
    if not outputs: return 'no output'
    parts = []
    for o in outputs:
        t = o.get('output_type')
        if t == 'stream': parts.append(f"{o.get('name')} {_text(o.get('text', ''))[:60]!r}")
        elif t == 'error': parts.append(f"error {o.get('ename')}")
        else: parts.append('+'.join(o.get('data', {})))
    return '; '.join(parts)

## 3. problems visible in the outputs themselves

def output_problems(cell):
    "Error, traceback and progress-bar outputs, and charts with no static image, in one code cell."
    found = []
    for o in cell.get('outputs', []):
        t = o.get('output_type')
        texts = [_text(o.get('text', ''))] + [_text(v) for k,v in (o.get('data') or {}).items() if k == 'text/plain']
        if t == 'error': found.append(f"error output {o.get('ename')}: {o.get('evalue', '')[:80]}")
        elif any(TRACEBACK in s for s in texts): found.append('a traceback in its output')
        if any(PROGRESS.search(s) for s in texts): found.append('progress-bar debris in its output')
        if static_charts.charts_in(o) and not static_charts.has_static(o):
            found.append('a chart with no static image (python tests/static_charts.py adds one)')
    return found

def title_problems(stored, dry):
    "No title, or text nbdev drops: it turns the cell holding the first `# heading` into title and description."
    from nbdev.frontmatter import _md2dict
    fm = getattr(dry, 'frontmatter_', {})
    if not str(fm.get('title', '')).strip():
        return ['no title: the first markdown cell should start with `# Title` (and `> description`)']
    kept = {c.orig_ for c in dry.cells if getattr(c, 'orig_', None) is not None}
    for i,c in enumerate(stored['cells']):
        if i in kept or c['cell_type'] != 'markdown': continue
        src = _text(c['source'])
        if not _md2dict(src): continue
        title = desc = False
        lost = []
        for line in src.splitlines():
            s = line.strip()
            if not s: continue
            if not title and re.match(r'^#\s+\S', s): title = True; continue
            if not desc and s.startswith('>'): desc = True; continue
            if re.match(r'^-\s+\S.*:.*\S$', s): continue  # `- key: value` lines become frontmatter
            lost.append(s)
        if lost: return [f"cell {i}: only its `# title` and first `> description` line reach the page; "
                         f"nbdev drops the rest ({len(lost)} line{'s' if len(lost) > 1 else ''}, from {lost[0][:50]!r})"]
        return []
    return []

## 4. HTML and the browser

def quarto_options(source):
    "Quarto's `#| key: value` cell options, which nbdev leaves at the top of a code cell for Quarto."
    opts = {}
    for line in source.splitlines():
        m = re.match(r'^\s*#\|\s*([\w-]+)\s*:\s*(.*?)\s*$', line)
        if not m: break
        opts[m[1]] = m[2].strip('"\'')
    return opts

# the output a page shows when a cell stored several: Quarto's order for HTML
MIME_ORDER = ('text/html', 'image/svg+xml', 'image/png', 'image/jpeg', 'text/markdown', 'text/latex', 'text/plain')
ANSI = re.compile(r'\x1b\[[0-9;]*[A-Za-z]')
MATHJAX = 'https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-svg-full.js'  # served from tests/docs/node_modules

def _fence(text, attrs=''):
    "A fenced block that no backtick run inside `text` can close."
    ticks = '`' * max(3, 1 + max((len(m) for m in re.findall(r'`+', text)), default=0))
    return f"{ticks}{attrs}\n{text.rstrip()}\n{ticks}"

def _output_md(o):
    "One stored output as the markdown Quarto writes for it (its intermediate .md file, `keep-md: true`)."
    t = o.get('output_type')
    if t == 'stream':
        return f"::: {{.cell-output .cell-output-{o.get('name', 'stdout')}}}\n{_fence(_text(o.get('text', '')))}\n:::"
    if t == 'error':
        return f"::: {{.cell-output .cell-output-error}}\n{_fence(ANSI.sub('', _text(o.get('traceback', ''))))}\n:::"
    data = o.get('data') or {}
    mime = next((m for m in MIME_ORDER if m in data), None)
    if mime is None: return ''
    body = data[mime] if isinstance(data[mime], str) else _text(data[mime])
    if mime == 'text/html': body = _fence(body, '{=html}')
    elif mime == 'image/svg+xml': body = _fence(body, '{=html}')
    elif mime.startswith('image/'): body = f"![](data:{mime};base64,{body.strip()})"
    elif mime == 'text/plain': body = _fence(body)
    return f"::: {{.cell-output .cell-output-display}}\n{body}\n:::"

def quarto_markdown(real):
    "The processed notebook as the markdown Quarto renders: cells in divs, outputs by MIME order, cell options obeyed."
    parts = []
    for c in real['cells']:
        source = _text(c.get('source', ''))
        if c['cell_type'] == 'raw': continue  # the frontmatter nbdev puts first: Quarto reads it, shows none of it
        cid = re.sub(r'[^\w-]', '', str(c.get('id', '')))
        if c['cell_type'] == 'markdown':
            parts.append(f"::: {{#cell-{cid} .cell .markdown}}\n{source}\n:::")
            continue
        o = quarto_options(source)
        if o.get('include', '').lower() == 'false': continue
        inner = []
        code = '\n'.join(l for l in source.splitlines() if not re.match(r'^\s*#\|', l)).strip()
        if code and o.get('echo', '').lower() != 'false': inner.append(_fence(code, ' {.python .cell-code}'))
        if o.get('output', '').lower() != 'false': inner += [m for m in map(_output_md, c.get('outputs', [])) if m]
        if inner: parts.append(f"::::: {{#cell-{cid} .cell}}\n" + '\n\n'.join(inner) + "\n:::::")
    return '\n\n'.join(parts) + '\n'

def site_css(nbs):
    "What the site's styling decides about the page's width and long lines: Quarto's article grid and the book's CSS."
    import yaml
    quarto = yaml.safe_load((nbs/'_quarto.yml').read_text()) if (nbs/'_quarto.yml').exists() else {}
    html_fmt = ((quarto or {}).get('format') or {}).get('html') or {}
    wrap = html_fmt.get('code-overflow') == 'wrap'
    # Quarto's default grid: an 800 px body column between the sidebar and the table of contents
    css = ("body{font:17px/1.5 system-ui,sans-serif;margin:0;color:#373a3c} main{max-width:800px;margin:1.5em auto 1.5em 270px;padding:0 1em}"
           "pre{background:#f6f8fa;padding:.5em;font:14px/1.4 ui-monospace,monospace;overflow-x:auto;"
           + ("white-space:pre-wrap;overflow-wrap:anywhere;" if wrap else "") + "}"
           "code{font:14px ui-monospace,monospace} .cell-output-display{overflow-x:visible}"
           "table{border-collapse:collapse}td,th{padding:.2em .5em;border-bottom:1px solid #ddd}"
           "h1.title{margin-bottom:.2em} p.description{color:#6c757d;font-size:1.1em}")
    own = (nbs/html_fmt['css']).read_text() if html_fmt.get('css') and (nbs/html_fmt['css']).exists() else ''
    return css + '\n' + own

def to_html(real, title, description, dest, css=''):
    """The processed notebook as the site shows it: Quarto's markdown through pandoc, maths typeset by MathJax, the
    title and description read as markdown, as Quarto reads them."""
    md = dest.with_suffix('.md')
    # JSON strings are YAML strings: the frontmatter pandoc parses as markdown
    front = f"---\ntitle: {json.dumps(title)}\ndescription: {json.dumps(description)}\npagetitle: {json.dumps(title or dest.stem)}\n---\n\n"
    md.write_text(front + quarto_markdown(real), encoding='utf-8')
    template = dest.with_suffix('.template.html')
    template.write_text(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>$pagetitle$</title>
$if(math)$$math$$endif$<style>{css}</style></head>
<body><main><header>$if(title)$<h1 class="title">$title$</h1>$endif$$if(description)$<p class="description">$description$</p>$endif$</header>
$body$
</main></body></html>
""", encoding='utf-8')
    r = subprocess.run(['pandoc', str(md), '-f', 'markdown', '-t', 'html5', f'--mathjax={MATHJAX}', '--template', str(template),
                        '-o', str(dest)], capture_output=True, text=True)
    if r.returncode: raise RuntimeError(f'pandoc could not render {dest.name}: {r.stderr[-2000:]}')
    template.unlink()

def browse(pages, work, timeout_ms=20000):
    "Open every page in headless Chromium (tests/docs/pages.mjs); {page name: what the browser saw}."
    job, result = work/'pages.json', work/'browser.json'
    job.write_text(json.dumps({'chromium': chromium_path(), 'timeout_ms': timeout_ms, 'pages': pages}))
    r = subprocess.run(['node', str(TOOLS/'pages.mjs'), str(job), str(result)], cwd=TOOLS,
                       capture_output=True, text=True, timeout=60 + len(pages) * (timeout_ms / 1000 + 30))
    if r.returncode: raise RuntimeError(f'the browser run failed:\n{r.stdout}\n{r.stderr}')
    return json.loads(result.read_text())

def page_problems(seen, cell_of):
    "What the browser saw that a reader would call broken, and (second) what only an offline reader misses."
    where = lambda cid: f"cell {cell_of[cid]}: " if cid in cell_of else ''
    found, offline = [], [f'loads {u[:100]} from the network' for u in dict.fromkeys(seen['blocked'])]
    if not seen['title']: found.append('the page has no title')
    for h in seen['headings']:
        n = len(h['text'].split())
        if n > MAX_HEADING_WORDS:
            found.append(f"{where(h['cell'])}a {h['tag']} heading of {n} words is a paragraph: {h['text'][:60]!r}"
                         " (a line starting with `#` in markdown?)")
    for c in seen['charts']:
        if not c['drawn']: found.append(f"{where(c['cell'])}a chart is not drawn{': ' + c['error'] if c['error'] else ''}")
        elif not c['marks']: found.append(f"{where(c['cell'])}a chart draws no marks: axes and legend, no data shown")
    for m in seen['rawMath']: found.append(f"{where(m['cell'])}maths left as raw text: {m['text']!r}")
    for m in seen['quartoText']: found.append(f"{where(m['cell'])}Quarto attribute text shows on the page: {m['text']!r}")
    for m in seen['rawMarkdown']: found.append(f"{where(m['cell'])}markdown left as raw text (backticks): {m['text']!r}")
    if seen['width']['page'] > seen['width']['viewport']:
        found.append(f"the page is {seen['width']['page']} px wide in a {seen['width']['viewport']} px window: something "
                     "overflows the body column (a wide table or image?)")
    for o in seen['cutOutputs']:
        found.append(f"{where(o['cell'])}an output line is cut at the right edge ({o['over']} px hidden; longest line "
                     f"{o['line']!r}...)")
    for im in seen['images']:
        # the browser refuses requests to other hosts, so only an image the page itself carries must show
        if not im['ok'] and not re.match(r'https?:', im['src']): found.append(f"{where(im['cell'])}an image does not show ({im['src']})")
    found += [f'a script error on the page: {e[:200]}' for e in seen['errors']]
    return found + list(dict.fromkeys(seen['cdn'])), offline

## the main job's report

# a results.json from a real `scale-sae compare` run (the tiny preset, the README's command): its report is a page
REPORT_RESULTS = 'results/compare-tiny.json'

def report_page(results, out, report):
    "`report.html` rebuilt from `results` as `scale-sae compare` writes it, as one more page to open."
    sys.path.insert(0, str(ROOT))
    from scale_sae.cli import report_from_results
    page, shot = out/'html'/'report.html', out/'screens'/'report.png'
    page.parent.mkdir(parents=True, exist_ok=True); shot.parent.mkdir(parents=True, exist_ok=True)
    report_from_results(results, page)
    report['report'] = {'notebook': str(results), 'problems': [], 'warnings': [], 'executed_cells': [],
                        'html': str(page), 'screenshot': str(shot)}
    return {'name': 'report', 'html': str(page), 'screenshot': str(shot), 'cell_of': {}}

## the whole check

def check(nbs, out, timeout=900, pages_too=True):
    "Run every step (only processing if not `pages_too`); returns the report, also written to `out`/report.json."
    from nbdev.frontmatter import _fm2dict
    t0 = time.time()
    if out.exists(): shutil.rmtree(out)
    out.mkdir(parents=True)
    project, errors, unexplained = process_all(nbs, out, _env(out/'bin'), timeout)
    timing = {'process_s': round(time.time() - t0, 1)}
    report, pages, css = {}, [], site_css(nbs)
    with contextlib.chdir(project):  # nbdev's processors read settings.ini from the working directory
        for nb in _notebooks(nbs):
            rel = nb.relative_to(nbs)
            name = str(rel.with_suffix(''))
            stored = json.loads(nb.read_text(encoding='utf-8'))
            dry, executed, mixed = dry_process(nb)
            r = report[name] = {'notebook': str(nb), 'problems': [], 'warnings': [], 'executed_cells': executed}
            r['warnings'] += [f"cell {i} `{_first_line(stored['cells'][i])}`: mixes imports with other code, so "
                              "nbdev_docs runs all of it" for i in mixed]
            if pages_too: r['problems'] += title_problems(stored, dry)
            real_path = project/'_proc'/rel
            if errors[nb] or not real_path.exists():
                what, source = errors[nb] or ('wrote no processed copy of it', None)
                cell = next((f'cell {i} `{_first_line(c)}`' for i,c in enumerate(stored['cells'])
                             if source and _strip_directives(_text(c.get('source', ''))) == source), None)
                r['problems'].append(f'nbdev_proc_nbs fails: executing {cell} {what}' if cell else f'nbdev_proc_nbs {what}')
                # still list what the stored outputs show, so one run names every fix
                for i,c in enumerate(stored['cells'] if pages_too else []):
                    r['problems'] += [f"cell {i} `{_first_line(c)}`: {p}" for p in output_problems(c)]
                continue
            real = json.loads(real_path.read_text(encoding='utf-8'))
            aligned = lined_up(dry, real)
            if aligned: r['problems'] += compare(stored, dry, real)
            else: r['problems'].append("its processed copy differs from nbdev's processors run without executing "
                                       "in more than outputs: outputs not compared")
            if not pages_too: continue
            cell_of = {}
            for k,c in enumerate(real['cells']):
                i = getattr(dry.cells[k], 'orig_', None) if aligned else None
                if i is not None: cell_of[c.get('id')] = i
                where = f"cell {i} `{_first_line(stored['cells'][i])}`" if i is not None else f"processed cell {k} `{_first_line(c)}`"
                if c['cell_type'] == 'code': r['problems'] += [f'{where}: {p}' for p in output_problems(c)]
            fm = next((_fm2dict(_text(c['source'])) for c in real['cells'] if c['cell_type'] == 'raw'), {}) or {}
            page = out/'html'/rel.with_suffix('.html')
            page.parent.mkdir(parents=True, exist_ok=True)
            to_html(real, str(fm.get('title', '')), str(fm.get('description', '')), page, css)
            r['html'], r['screenshot'] = str(page), str(out/'screens'/rel.with_suffix('.png'))
            Path(r['screenshot']).parent.mkdir(parents=True, exist_ok=True)
            pages.append({'name': name, 'html': str(page), 'screenshot': r['screenshot'], 'cell_of': cell_of})
    if pages_too and (nbs/REPORT_RESULTS).exists(): pages.append(report_page(nbs/REPORT_RESULTS, out, report))
    timing['render_s'] = round(time.time() - t0 - timing['process_s'], 1)
    if pages:
        t1 = time.time()
        seen = browse([{k: v for k,v in p.items() if k != 'cell_of'} for p in pages], out)
        for p in pages:
            found, offline = page_problems(seen[p['name']], p['cell_of'])
            report[p['name']]['problems'] += found
            report[p['name']]['warnings'] += offline
        timing['browser_s'] = round(time.time() - t1, 1)
    problems = [unexplained] if unexplained else []
    # nbdev_docs rewrites these when settings.ini lets it (custom_sidebar = False drops the sidebar's sections)
    for f in ('sidebar.yml', 'nbdev.yml'):
        if (nbs/f).exists() and (project/nbs.name/f).read_text() != (nbs/f).read_text():
            problems.append(f"processing rewrote {nbs.name}/{f}: set custom_sidebar = True and the title in settings.ini")
    res = {'ok': not problems and not any(r['problems'] for r in report.values()), 'problems': problems,
           'timing': timing, 'pages': report}
    (out/'report.json').write_text(json.dumps(res, indent=1, ensure_ascii=False))
    return res

def format_report(res):
    pages = res['pages']
    bad = [n for n,r in pages.items() if r['problems']]
    lines = [f"docs check: {len(pages)} pages, {len(bad)} failing "
             f"(cell numbers count every stored cell from 0; {json.dumps(res['timing'])})"]
    lines += ['FAIL ' + p for p in res['problems']]
    for name,r in pages.items():
        lines.append(f"{'FAIL' if r['problems'] else 'ok  '} {name}" + (f"  [{r['screenshot']}]" if r.get('screenshot') else ''))
        lines += ['     - ' + p.replace('\n', '\n       ') for p in r['problems']]
        lines += ['     ~ ' + w for w in r['warnings']]
    return '\n'.join(lines)

def main(argv=None):
    from nbdev.config import get_config
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--nbs', type=Path, default=None, help="notebooks folder (default: settings.ini's nbs_path)")
    p.add_argument('--out', type=Path, default=ROOT/'_docs_check', help='artifacts: screenshots, pages, report.json')
    p.add_argument('--timeout', type=int, default=900, help='seconds processing may take (a minute today)')
    p.add_argument('--processing-only', action='store_true',
                   help='only step 1: nbdev_proc_nbs completes and keeps every stored output (no browser needed)')
    a = p.parse_args(argv)
    gaps = missing_tools(browser=not a.processing_only)
    if gaps:
        print('docs check cannot run, missing: ' + '; '.join(gaps))
        return 2
    res = check((a.nbs or get_config(path=ROOT).nbs_path).resolve(), a.out.resolve(), a.timeout, not a.processing_only)
    print(format_report(res))
    return 0 if res['ok'] else 1

if __name__ == '__main__': sys.exit(main())
