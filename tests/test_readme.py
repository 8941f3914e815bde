"""README.md is the landing notebook, nbs/index.ipynb, rendered as markdown (what `nbdev_readme` produces with
Quarto). This test keeps the two in step; `python tests/test_readme.py --write` regenerates README.md."""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def _hidden(source: str) -> bool:
    return any(line.strip().replace(' ', '') in ('#|hide', '#|include:false') for line in source.splitlines())

def render_index(nb_path=ROOT/'nbs'/'index.ipynb') -> str:
    "Markdown cells as they are, visible code cells as python blocks, followed by their text outputs."
    parts = []
    for cell in json.loads(Path(nb_path).read_text())['cells']:
        source = ''.join(cell['source']).strip()
        if not source or (cell['cell_type'] == 'code' and _hidden(source)): continue
        if cell['cell_type'] == 'markdown':
            parts.append(source)
            continue
        parts.append(f"```python\n{source}\n```")
        text = ''.join(''.join(o.get('text', '')) for o in cell.get('outputs', []) if o.get('output_type') == 'stream')
        if text.strip(): parts.append(f"```\n{text.rstrip()}\n```")
    return '\n\n'.join(parts) + '\n'

def test_readme_matches_index():
    expected = render_index()
    assert (ROOT/'README.md').read_text() == expected, "README.md is out of step with nbs/index.ipynb: run `python tests/test_readme.py --write`"

if __name__ == '__main__' and '--write' in sys.argv:
    (ROOT/'README.md').write_text(render_index())
