"""Give every chart output a static image beside its interactive form.

A chart stored by Altair's HTML renderer is a `text/html` script that fetches vega from a CDN: a viewer that strips
scripts (GitHub's) or has no network shows nothing. This adds an `image/png` rendering of the same spec (vl-convert,
no browser) to the same output's data bundle, so a viewer that cannot draw the chart has an image to show. Outputs
that already hold a static image are left alone, so running it twice changes nothing, and a notebook is rewritten
only if `json.dumps` reproduces its current bytes exactly: no formatting churn in the diff.

    python tests/static_charts.py nbs/*.ipynb           # add the missing images
    python tests/static_charts.py --check nbs/*.ipynb   # list charts without one, exit 1 if any
"""
import argparse, base64, json, re, struct, sys
from pathlib import Path

STATIC_MIMES = ('image/png', 'image/svg+xml')
# what Altair's `mimetype` renderer and JupyterLab use instead of HTML: application/vnd.vegalite.v5+json up to
# Altair 5, application/vnd.vegalite.v6.json from Altair 6 (and vnd.vega.* once VegaFusion compiled the spec)
VEGA_MIME = re.compile(r'^application/vnd\.vega(?P<lite>lite)?\.v(?P<major>\d+)[+.]json$')
# Altair's notebook HTML calls an inline function with the spec, `})({...}, {"mode": "vega-lite"})`;
# its standalone page template assigns `var spec = {...};`
SPEC_START = re.compile(r'\}\)\(\s*(?=\{)|\bspec\s*=\s*(?=\{)')
SCHEMA = re.compile(r'/schema/(?P<kind>vega-lite|vega)/v(?P<version>\d+(?:\.\d+)*)\.json')
PNG_SCALE = 1  # Altair's own default for PNG; 2 is sharper on dense screens at about 2.4 times the bytes

def _text(v): return v if isinstance(v, str) else ''.join(v)

class Chart:
    "A vega or vega-lite spec found in an output, and the version its `$schema` (else its mime type) names."
    def __init__(self, spec, lite, major=None):
        self.spec,self.lite = spec,lite
        m = SCHEMA.search(str(spec.get('$schema', '')))
        self.version = m['version'] if m else major

def _html_charts(html):
    found, decoder = [], json.JSONDecoder()
    for m in SPEC_START.finditer(html):
        try: obj,_ = decoder.raw_decode(html, m.end())
        except ValueError: continue
        s = SCHEMA.search(str(obj.get('$schema', ''))) if isinstance(obj, dict) else None
        if s: found.append(Chart(obj, s['kind'] == 'vega-lite'))
    return found

def charts_in(output):
    "Every chart spec stored in one output's data bundle."
    data = output.get('data') or {}
    for mime,v in data.items():
        m = VEGA_MIME.match(mime)
        if m: return [Chart(v if isinstance(v, dict) else json.loads(_text(v)), bool(m['lite']), m['major'])]
    html = _text(data.get('text/html', ''))
    return _html_charts(html) if 'vegaEmbed' in html else []

def has_static(output): return any(m in (output.get('data') or {}) for m in STATIC_MIMES)

def _vl_version(chart, supported):
    "The newest vl-convert bundle of the spec's major.minor (else of its major), so the image matches the page."
    if not chart.version: return None
    parts = chart.version.split('.')
    for want in ('.'.join(parts[:2]), parts[0]):
        same = [v for v in supported if v == want or v.startswith(want + '.')]
        if same: return max(same, key=lambda v: tuple(map(int, v.split('.'))))
    return None

def render(chart, fmt='png', scale=PNG_SCALE):
    "The chart as (mime type, value as stored in a notebook, metadata for that mime type)."
    import vl_convert as vlc
    lite = 'vegalite' if chart.lite else 'vega'
    kw = dict(allowed_base_urls=[])  # the charts carry their data; never fetch while rendering
    if chart.lite:
        v = _vl_version(chart, vlc.get_vegalite_versions())
        if v: kw['vl_version'] = f'v{v}'
    if fmt == 'svg': return 'image/svg+xml', getattr(vlc, f'{lite}_to_svg')(chart.spec, **kw), None
    png = getattr(vlc, f'{lite}_to_png')(chart.spec, scale=scale, **kw)
    w,h = struct.unpack('>II', png[16:24])  # the IHDR chunk: pixel width and height
    # a scaled PNG would otherwise show `scale` times too large where the viewer honours width and height
    meta = None if scale == 1 else {'height': round(h / scale), 'width': round(w / scale)}
    return 'image/png', base64.b64encode(png).decode('ascii'), meta

def _put(output, field, key, value):
    "Set `output[field][key]`, keeping the field's keys sorted if they were (nbformat writes them sorted)."
    d = output.get(field) or {}
    was_sorted = list(d) == sorted(d)
    d[key] = value
    output[field] = dict(sorted(d.items())) if was_sorted else d

def add_static(output, fmt='png', scale=PNG_SCALE):
    "Add an image of the output's chart to its bundle; False when there is nothing to do."
    charts = charts_in(output)
    if not charts or has_static(output): return False
    if len(charts) > 1: raise ValueError(f'{len(charts)} charts in one output: one static image cannot stand for them')
    mime,value,meta = render(charts[0], fmt, scale)
    was_sorted = list(output) == sorted(output)
    _put(output, 'data', mime, value)
    if meta: _put(output, 'metadata', mime, meta)
    if was_sorted:
        items = sorted(output.items())
        output.clear(); output.update(items)
    return True

def dumps_like(nb, raw):
    "Serialise `nb` the way the repository stores notebooks, keeping whether `raw` ended with a newline."
    return json.dumps(nb, indent=1, ensure_ascii=False) + ('\n' if raw.endswith('\n') else '')

def missing_static(nb):
    "(cell index, output index) of every chart output without a static image."
    return [(i,j) for i,c in enumerate(nb['cells']) for j,o in enumerate(c.get('outputs', []))
            if charts_in(o) and not has_static(o)]

def process(path, check=False, fmt='png', scale=PNG_SCALE):
    "Add the missing images to one notebook file; returns how many were (or, with `check`, would be) added."
    path = Path(path)
    raw = path.read_text(encoding='utf-8')
    nb = json.loads(raw)
    missing = missing_static(nb)
    if check or not missing: return len(missing)
    if dumps_like(nb, raw) != raw:
        raise ValueError(f'{path} is not written as indent=1, ensure_ascii=False JSON: not rewriting it')
    for i,j in missing: add_static(nb['cells'][i]['outputs'][j], fmt, scale)
    path.write_text(dumps_like(nb, raw), encoding='utf-8')
    return len(missing)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('notebooks', nargs='+', type=Path)
    p.add_argument('--check', action='store_true', help='change nothing; exit 1 if a chart has no static image')
    p.add_argument('--format', choices=('png', 'svg'), default='png', help='png shows everywhere; svg is smaller')
    p.add_argument('--scale', type=float, default=PNG_SCALE, help='PNG pixels per chart pixel')
    a = p.parse_args(argv)
    total = 0
    for nb in a.notebooks:
        n = process(nb, check=a.check, fmt=a.format, scale=a.scale)
        if n: print(f"{nb}: {n} chart{'s' if n > 1 else ''} {'without a static image' if a.check else 'given an image'}")
        total += n
    return 1 if a.check and total else 0

if __name__ == '__main__': sys.exit(main())
