"""The GPU check (tests/gpu_check.py) runs end to end as a dry run, as it must on a machine without a GPU: every
step passes and writes the files its README section promises, with figures that hold together."""
import json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def test_gpu_check_dry_run_writes_every_result(tmp_path):
    out = tmp_path / "gpu_check"
    done = subprocess.run([sys.executable, "tests/gpu_check.py", "--dry-run", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.splitlines()[0].startswith("gpu check on: ")  # the device is named before anything runs
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["mode"] == "dry" and list(report["steps"]) == ["gpu_tests", "bench", "widths", "train", "data_parallel"]
    assert all(step["ok"] for step in report["steps"].values()), report["steps"]
    bench = report["steps"]["bench"]["table"]
    assert {row["model"] for row in bench} == {"ScaleSAE auto", "ScaleSAE dense", "TopKSAE"}
    for row in bench: assert abs(row["tokens/s"] * row["s/step"] - 256) < 1e-6  # the dry run's 256 tokens per step
    widths = report["steps"]["widths"]["table"]
    assert sorted({row["d_sae"] for row in widths}) == [256, 512]
    assert [row["d_sae"] for row in widths if row["model"] == "TopKSAE"] == [256]  # topk_max=256 in the dry run
    for name in ("train", "data_parallel"):
        assert 0 < report["steps"][name]["metrics"]["fve"] <= 1, name
        assert not list((out / name).glob("**/checkpoint*.pt"))  # removed: the numbers are in the summary
        assert list((out / name).glob("**/sae/cfg.json")) or list((out / name).glob("**/sae/*.json"))
    assert report["steps"]["data_parallel"]["processes"] == 2 and report["steps"]["data_parallel"]["backend"] == "gloo"
    summary = (out / "gpu_check.md").read_text()
    assert summary.startswith("# GPU check: ") and "| data_parallel | yes |" in summary
