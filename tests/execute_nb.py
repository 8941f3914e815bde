"""Execute notebooks as `nbdev_test` does (cells marked `#| eval: false` or with a GPU/notest flag are skipped), and
store the outputs in place, so that the outputs a notebook shows come from a real run of its own cells.

    python tests/execute_nb.py nbs/01b_metrics.ipynb [more notebooks]     # full sizes: leave CI unset
"""
import json, os, re, sys, time
from pathlib import Path

SKIP_FLAGS = {"notest", "gpu"}

def _directives(source):
    return {m.group(1).strip(): m.group(2).strip() for m in re.finditer(r"^\s*#\|\s*([\w-]+:?)\s*(.*)$", source, re.M)}

def _skip(cell, source):
    if cell["cell_type"] != "code": return True
    d = _directives(source)
    return d.get("eval:", "").lower() == "false" or bool(SKIP_FLAGS & d.keys())

def _text(output):
    "The text an output shows (a stream, or a result's text/plain), else None."
    t = output.get("text") or output.get("data", {}).get("text/plain")
    return t if t is None or isinstance(t, str) else "".join(t)

def execute(path: Path):
    from execnb.shell import CaptureShell
    raw = json.loads(path.read_text(encoding="utf-8"))
    shell = CaptureShell(path)
    # stored outputs are read, not watched: progress bars would only leave debris in them. TQDM_DISABLE covers bars
    # left at their defaults; the patch also silences bars a caller asked for (`progress=True`, an explicit disable=False)
    os.environ["TQDM_DISABLE"] = "1"
    shell.run("import tqdm.std as _tqdm_std\n_tqdm_init = _tqdm_std.tqdm.__init__\n"
              "def _silent_init(self, *args, **kwargs): _tqdm_init(self, *args, **{**kwargs, 'disable': True})\n"
              "_tqdm_std.tqdm.__init__ = _silent_init")
    cwd = os.getcwd(); os.chdir(path.parent)
    t0, printed = time.time(), []  # the text of every cell run so far, shown if a later cell fails
    try:
        for stored in raw["cells"]:
            source = stored["source"] if isinstance(stored["source"], str) else "".join(stored["source"])
            if _skip(stored, source): continue
            outputs = shell.run(source)
            if shell.exc is not None:
                # the notebook is left as it was; what the run printed so far says why a stored claim failed
                raise RuntimeError(f"{path} failed in cell:\n{source}\n{shell.exc!r}\nprinted before it:\n" + "\n".join(filter(None, printed)))
            stored["outputs"] = json.loads(json.dumps(outputs, default=dict))
            stored["execution_count"] = None
            printed += [_text(o) for o in outputs]
    finally: os.chdir(cwd)
    path.write_text(json.dumps(raw, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{path}: executed in {time.time() - t0:.0f} s", flush=True)

if __name__ == "__main__":
    for p in sys.argv[1:]: execute(Path(p))
