"""README.md is the landing notebook, nbs/index.ipynb, rendered as markdown (what `nbdev_readme` produces with
Quarto). This test keeps the two in step; `python tests/test_readme.py --write` regenerates README.md. It also
runs the README's two commands: the install in a fresh virtual environment, and the test command is the line
`.ci/run` runs."""
import json, re, subprocess, sys, venv
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

def readme_commands() -> tuple:
    "(install command, test command): the README's block of two shell lines."
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT/'README.md').read_text(), re.S)
    pairs = [b.strip().splitlines() for b in blocks if len(b.strip().splitlines()) == 2]
    assert len(pairs) == 1, "README.md should hold one shell block of two lines: the install and the test command"
    return tuple(pairs[0])

def test_ci_runs_the_readme_test_command():
    install, test = readme_commands()
    assert 'CI=true' in test and test in (ROOT/'.ci'/'run').read_text().splitlines()

def test_install_command_in_a_fresh_venv_pulls_no_cuda(tmp_path):
    """The README's install command, as written but for its last step (the main job, 18 minutes, which CI runs
    through appendix A1 at CI size), in a new virtual environment: torch is the CPU build, nothing from CUDA comes
    along, and the installed command answers."""
    install, _ = readme_commands()
    steps = install.split(' && ')
    assert steps[-1].startswith('scale-sae compare') and all(s.startswith('pip install') for s in steps[:-1])
    env_dir = tmp_path/'venv'
    venv.create(env_dir, with_pip=True)
    python = env_dir/'bin'/'python'
    for step in steps[:-1]:
        done = subprocess.run(f'"{python}" -m {step}', shell=True, cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, f"{step}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    installed = subprocess.run([python, '-m', 'pip', 'list', '--format=json'], capture_output=True, text=True, check=True)
    packages = {p['name'].lower(): p['version'] for p in json.loads(installed.stdout)}
    assert packages['torch'].endswith('+cpu'), packages['torch']
    cuda = sorted(n for n in packages if n.startswith(('nvidia-', 'triton', 'cuda')))
    assert not cuda, f"the install pulled CUDA packages: {cuda}"
    assert packages['scale-sae'] == re.search(r'^version = (.+)$', (ROOT/'settings.ini').read_text(), re.M).group(1)
    helped = subprocess.run([env_dir/'bin'/'scale-sae', '--help'], capture_output=True, text=True)
    assert helped.returncode == 0 and 'compare' in helped.stdout, helped.stderr

if __name__ == '__main__' and '--write' in sys.argv:
    (ROOT/'README.md').write_text(render_index())
