"""The docs check (tests/docs_check.py) must pass a sound page and fail a broken copy of a real notebook, naming
each breakage; tests/static_charts.py must add chart images without touching anything else."""
import difflib, json, os, shutil, sys
from pathlib import Path
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import docs_check, static_charts

ROOT = Path(__file__).resolve().parents[1]
# .ci/run sets this: there a missing browser is a failure, not a reason to skip
REQUIRED = os.environ.get('DOCS_CHECK_REQUIRED', '') not in ('', '0')
needs_browser = pytest.mark.skipif(bool(docs_check.missing_tools()) and not REQUIRED,
                                   reason='docs check tools missing: ' + '; '.join(docs_check.missing_tools()))

def code(source, outputs=()):
    return {'cell_type': 'code', 'execution_count': None, 'metadata': {}, 'outputs': list(outputs), 'source': source}
def md(source): return {'cell_type': 'markdown', 'metadata': {}, 'source': source}
def stream(text, name='stdout'): return {'name': name, 'output_type': 'stream', 'text': text}
def write_nb(path, nb, newline=True):
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + ('\n' if newline else ''), encoding='utf-8')

def chart_outputs():
    "One chart as Altair's notebook HTML stores it, and one as its `mimetype` renderer does."
    import altair as alt, pandas as pd
    chart = alt.Chart(pd.DataFrame({'x': [1, 2, 3], 'y': [1, 3, 2]})).mark_line().encode(x='x', y='y')
    with alt.renderers.enable('html'): html = chart._repr_mimebundle_()['text/html']
    with alt.renderers.enable('mimetype'): bundle,_ = chart._repr_mimebundle_()
    return ({'data': {'text/html': html, 'text/plain': 'alt.Chart(...)'}, 'execution_count': None, 'metadata': {},
             'output_type': 'execute_result'},
            {'data': bundle, 'metadata': {}, 'output_type': 'display_data'})

def html_out(html):
    return {'data': {'text/html': html, 'text/plain': '<HTML>'}, 'execution_count': None, 'metadata': {},
            'output_type': 'execute_result'}

def empty_chart_output():
    "A bar chart on a log scale: its bars start at 0, so it draws axes and no bar."
    import altair as alt, pandas as pd
    chart = alt.Chart(pd.DataFrame({'x': [1, 2, 3], 'y': [10, 100, 1000]})).mark_bar().encode(
        x='x:Q', y=alt.Y('y:Q', scale=alt.Scale(type='log')))
    with alt.renderers.enable('html'): html = chart._repr_mimebundle_()['text/html']
    return {'data': {'text/html': html, 'text/plain': 'alt.Chart(...)'}, 'execution_count': None, 'metadata': {},
            'output_type': 'execute_result'}

def with_static(output):
    static_charts.add_static(output)
    return output

# nbdev executes import cells only in notebooks that export something
EXPORT = code('#| export\ndef _probe(): "Makes nbdev treat the notebook as documenting code."')

def good_nb():
    html_chart, mime_chart = chart_outputs()
    return {'cells': [md('# A sound page\n\n> Every part of it renders.'), EXPORT, code('import math'),
                      md('## Charts\n\nBoth drawn, both stored with an image.'),
                      code('chart', [with_static(html_chart)]), code('chart_mime', [with_static(mime_chart)]),
                      code('print(math.pi)', [stream('3.141592653589793\n')])],
            'metadata': {'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'}},
            'nbformat': 4, 'nbformat_minor': 5}

BREAKAGES = [  # (cell, what the report must say about it)
    (md('# This was meant as a paragraph but every line of it starts with a hash sign, so the page shows it\n'
        '# as one enormous heading instead'), 'words is a paragraph'),
    (code('1/0', [{'ename': 'ZeroDivisionError', 'evalue': 'division by zero', 'output_type': 'error',
                   'traceback': ['ZeroDivisionError: division by zero']}]), 'error output ZeroDivisionError'),
    (code('for _ in tqdm(range(3)): pass', [stream('100%|██████████| 3/3 [00:00<00:00, 3.00it/s]\n', 'stderr')]),
     'progress-bar debris'),
    (code('chart', [chart_outputs()[0]]), 'a chart with no static image'),
    (code('chart_mime', [chart_outputs()[1]]), 'a chart with no static image'),
    (code("import os\nprint('printed now')", [stream('printed when the notebook ran\n')]), 'changed its stored output'),
    # what only a page rendered as the site renders it shows
    (code('html_math', [html_out('<p>costs $d \\times d_{sae}$ per token</p>')]), 'maths left as raw text'),
    (code('html_attrs', [html_out('<p>see {target="_blank" style="float:right"}</p>')]), 'Quarto attribute text shows'),
    (code('html_ticks', [html_out('<p>call `encode` first</p>')]), 'markdown left as raw text'),
    (code('empty_chart', [with_static(empty_chart_output())]), 'a chart draws no marks'),
    (code('html_pre', [html_out('<pre style="white-space:pre">' + 'x' * 400 + '</pre>')]), 'an output line is cut'),
    (md('<div style="width:3000px">a block wider than any window</div>'), 'overflows the body column'),
    (md('![a figure](figures/missing.png)'), 'an image does not show'),
]

@needs_browser
def test_docs_check_fails_on_a_broken_copy(tmp_path):
    nbs = tmp_path/'nbs'
    nbs.mkdir()
    for f in ('_quarto.yml', 'nbdev.yml', 'sidebar.yml', 'styles.css'):
        if (ROOT/'nbs'/f).exists(): shutil.copy(ROOT/'nbs'/f, nbs/f)
    write_nb(nbs/'good.ipynb', good_nb())
    index = json.loads((ROOT/'nbs'/'index.ipynb').read_text(encoding='utf-8'))
    broken = dict(index, cells=index['cells'] + [EXPORT] + [c for c,_ in BREAKAGES])
    write_nb(nbs/'broken.ipynb', broken)
    write_nb(nbs/'raises.ipynb', dict(index, cells=index['cells'] + [EXPORT, code("import os\nraise RuntimeError('probe')")]))
    untitled = good_nb()
    untitled['cells'][0] = md('Some words, but no `# Title` line anywhere above them.')
    write_nb(nbs/'untitled.ipynb', untitled)
    crowded = good_nb()
    crowded['cells'][0] = md('# A crowded title cell\n\n> Its description.\n\nA paragraph that never reaches the page.')
    write_nb(nbs/'crowded.ipynb', crowded)

    out = tmp_path/'out'
    assert docs_check.main(['--nbs', str(nbs), '--out', str(out)]) == 1
    report = json.loads((out/'report.json').read_text())['pages']
    assert report['good']['problems'] == [], report['good']['problems']
    assert Path(report['good']['screenshot']).stat().st_size > 0
    problems = '\n'.join(report['broken']['problems'])
    first = len(index['cells']) + 1
    for i,(cell,said) in enumerate(BREAKAGES):
        # a heading is named by its text, an output by the cell holding it (the page's width by neither)
        assert said in problems and (cell['cell_type'] == 'markdown' or f'cell {first + i}' in problems), (said, problems)
    assert Path(report['broken']['screenshot']).stat().st_size > 0
    raised = '\n'.join(report['raises']['problems'])
    assert f"nbdev_proc_nbs fails: executing cell {first} `import os` raised RuntimeError: probe" in raised, raised
    assert any(p.startswith('no title') for p in report['untitled']['problems']), report['untitled']['problems']
    assert any('nbdev drops the rest' in p for p in report['crowded']['problems']), report['crowded']['problems']

def test_static_charts_adds_images_and_nothing_else(tmp_path):
    html_chart, mime_chart = chart_outputs()
    nb = good_nb()
    nb['cells'][4]['outputs'], nb['cells'][5]['outputs'] = [html_chart], [mime_chart]
    for newline in (True, False):
        path = tmp_path/f'charts{newline}.ipynb'
        write_nb(path, nb, newline)
        before = path.read_text(encoding='utf-8')
        assert static_charts.main(['--check', str(path)]) == 1
        assert static_charts.main([str(path)]) == 0
        after = path.read_text(encoding='utf-8')
        removed = [l for l in difflib.ndiff(before.splitlines(), after.splitlines()) if l.startswith('- ')]
        assert removed == [] and after.endswith('\n') == newline
        assert all(static_charts.has_static(o) for c in json.loads(after)['cells'] for o in c.get('outputs', [])
                   if static_charts.charts_in(o))
        assert static_charts.main([str(path)]) == 0 and path.read_text(encoding='utf-8') == after  # idempotent
        assert static_charts.main(['--check', str(path)]) == 0

def test_static_charts_leaves_unfamiliar_json_alone(tmp_path):
    nb = good_nb()
    nb['cells'][4]['outputs'] = [chart_outputs()[0]]
    path = tmp_path/'indented.ipynb'
    path.write_text(json.dumps(nb, indent=2), encoding='utf-8')
    with pytest.raises(ValueError, match='not rewriting'): static_charts.process(path)
