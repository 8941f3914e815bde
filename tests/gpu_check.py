"""The whole GPU check in one command, for the minutes a GPU is lent: it names the device first, then runs every
GPU measurement of the book and writes them to one folder that a caller brings back.

    python tests/gpu_check.py --out gpu_check            # on a CUDA machine: the real sizes (about 8 minutes on an H100)
    python tests/gpu_check.py --out gpu_check --dry-run  # anywhere: every step end to end at tiny sizes (CI runs it)

Without a GPU it runs the dry run by itself. Steps, each timed and recorded even when an earlier one failed:

1. `device`: the GPU's name, memory and count, torch and CUDA versions;
2. `gpu_tests`: `python -m pytest -q tests/test_gpu.py` (skipped on a CPU, where the dry run only checks they collect);
3. `bench`: chapter 04a's `bench` at the paper's size in fp32 and bf16, with each model's peak memory;
4. `widths`: chapter 04a's `bench_widths`, from 24,576 to 262,656 latents (TopK at every width on a GPU);
5. `train`: `scale-sae train --arch scale` through the real pipeline (the tiny LM, its corpus, the trainer);
6. `data_parallel`: the same under `torchrun`, one process per GPU (nccl; two processes with gloo in the dry run).

The folder holds `gpu_check.json` (every figure, each step's command and its output's tail), `gpu_check.md` (a
summary table and the bench tables), and `train/` and `data_parallel/` (the runs' folders, checkpoints removed).
Nothing needs the network. The tiny LM is trained on first use (about two minutes on a CPU); to skip that, carry a
trained one in a folder and point SCALE_SAE_CACHE at it (its name carries the Python version, so it must match).
The exit status is 0 when every step passed.
"""
import argparse, contextlib, io, json, os, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# sizes per mode: the paper's on a GPU, a smoke test of the same code elsewhere
SIZES = {
    "gpu": dict(bench=dict(tokens=8192, dtypes=("fp32", "bf16"), repeats=5, warmup=2),
                widths=dict(tokens=8192, topk_max=None, repeats=3),
                train=["--steps", "300", "--cache-batches", "100"]),
    "dry": dict(bench=dict(d=64, d_sae=1024, n_experts=16, k=8, tokens=256, dtypes=("fp32",), repeats=1, warmup=1),
                widths=dict(widths=(256, 512), expert_width=64, d=32, k=8, tokens=128, topk_max=256, repeats=1),
                train=["--steps", "20", "--cache-batches", "10", "--batch-size", "256", "--d-sae", "512",
                       "--n-experts", "8", "--k", "8", "--eval-ctxs", "8", "--ckpt-every", "10"]),
}

def device_facts():
    import torch
    facts = dict(torch=torch.__version__, cuda=torch.version.cuda, gpus=torch.cuda.device_count(),
                 python=sys.version.split()[0], cpu_threads=torch.get_num_threads())
    if facts["gpus"]:
        props = torch.cuda.get_device_properties(0)
        facts.update(name=props.name, memory_gib=round(props.total_memory / 2 ** 30, 1))
    else: facts["name"] = "no GPU (dry run on the CPU)"
    return facts

def run(cmd, timeout, env=None):
    "(exit status, the output's last 4,000 characters) of a command."
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
        return p.returncode, (p.stdout + p.stderr)[-4000:]
    except subprocess.TimeoutExpired as err:
        return 124, f"timed out after {timeout} s: {(err.stdout or b'')[-2000:]!r}"

def printed(fn, **kwargs):
    "(what `fn(**kwargs)` returned, what it printed)."
    out = io.StringIO()
    with contextlib.redirect_stdout(out): result = fn(**kwargs)
    return result, out.getvalue()

def steps(mode, out, device):
    "The checks, in order, as (name, callable returning a record dict)."
    sizes = SIZES[mode]
    def gpu_tests():
        status, tail = run([sys.executable, "-m", "pytest", "-q", "tests/test_gpu.py"], 600)
        return dict(ok=status == 0, status=status, tail=tail)
    def bench():
        from scale_sae.bench import bench
        table, text = printed(bench, device=device, **sizes["bench"])
        return dict(ok=True, table=table.to_dict(orient="records"), text=text)
    def widths():
        from scale_sae.bench import bench_widths
        table, text = printed(bench_widths, device=device, **sizes["widths"])
        return dict(ok=True, table=table.to_dict(orient="records"), text=text)
    def train_args(folder):
        return ["train", "--arch", "scale", "--preset", "tiny", "--device", device, "--quiet", "--out", str(out / folder),
                *sizes["train"]]
    def finished(folder):
        metrics = next((out / folder).glob("**/metrics.json"), None)
        for ckpt in (out / folder).glob("**/checkpoint*.pt"): ckpt.unlink()  # the summary keeps the numbers
        return json.loads(metrics.read_text()) if metrics else None
    def train():
        status, tail = run([sys.executable, "-m", "scale_sae.cli", *train_args("train")], 1200)
        metrics = finished("train")
        return dict(ok=status == 0 and metrics is not None, status=status, tail=tail, metrics=metrics)
    def data_parallel():
        import torch
        n = torch.cuda.device_count() if device == "cuda" else 2
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
               "-m", "scale_sae.cli", *train_args("data_parallel")]
        status, tail = run(cmd, 1200, env={"OMP_NUM_THREADS": "1"})
        metrics = finished("data_parallel")
        return dict(ok=status == 0 and metrics is not None, status=status, processes=n,
                    backend="nccl" if device == "cuda" else "gloo", tail=tail, metrics=metrics)
    return [("gpu_tests", gpu_tests), ("bench", bench), ("widths", widths), ("train", train),
            ("data_parallel", data_parallel)]

def summary(report) -> str:
    lines = [f"# GPU check: {report['device']['name']}", "",
             f"mode {report['mode']}; torch {report['device']['torch']}, CUDA {report['device']['cuda']}, "
             f"{report['device']['gpus']} GPU(s); {report['seconds']:.0f} s in all", "",
             "| step | ok | seconds | note |", "|---|---|---|---|"]
    for name, r in report["steps"].items():
        note = r.get("error") or (f"{r['processes']} processes, {r['backend']}" if name == "data_parallel" else "")
        if r.get("metrics"): note = (note + "; " if note else "") + f"mse {r['metrics']['mse']:.4g}, fve {r['metrics']['fve']:.3f}"
        lines.append(f"| {name} | {'yes' if r['ok'] else '**no**'} | {r['seconds']:.1f} | {note} |")
    for name in ("bench", "widths"):
        if report["steps"].get(name, {}).get("text"): lines += ["", f"## {name}", "", "```", report["steps"][name]["text"].rstrip(), "```"]
    return "\n".join(lines) + "\n"

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("gpu_check"), help="the folder every result goes to (default: gpu_check)")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU, whatever the machine has")
    a = p.parse_args(argv)
    t0 = time.time()
    facts = device_facts()
    print(f"gpu check on: {facts['name']}", flush=True)  # first, so a caller knows what it is measuring
    mode = "dry" if a.dry_run or not facts["gpus"] else "gpu"
    device = "cuda" if mode == "gpu" else "cpu"
    if a.out.exists(): shutil.rmtree(a.out)
    a.out.mkdir(parents=True)
    report = dict(mode=mode, device=facts, steps={})
    for name, check in steps(mode, a.out, device):
        s0 = time.time()
        try: record = check()
        except Exception as err: record = dict(ok=False, error=f"{type(err).__name__}: {err}")
        record["seconds"] = round(time.time() - s0, 1)
        report["steps"][name] = record
        print(f"{name}: {'ok' if record['ok'] else 'FAILED'} in {record['seconds']} s", flush=True)
    report["seconds"] = round(time.time() - t0, 1)
    (a.out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    (a.out / "gpu_check.md").write_text(summary(report))
    print(f"gpu check: {sum(r['ok'] for r in report['steps'].values())} of {len(report['steps'])} steps passed in "
          f"{report['seconds']:.0f} s; results in {a.out}")
    return 0 if all(r["ok"] for r in report["steps"].values()) else 1

if __name__ == "__main__": sys.exit(main())
