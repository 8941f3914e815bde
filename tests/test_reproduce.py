"""`reproduce` killed with SIGKILL in the middle of a run resumes without losing or retraining a finished run, and ends
with the results an uninterrupted experiment gets. The kill lands at one fixed point (right after a checkpoint of
the second run is written), so the test does not depend on timing."""
import json, os, subprocess, sys, textwrap

ONLY = ["switch-paper-k2", "scale-e2-k2", "topk-1d-k2"]
# the child: a tiny experiment; with KILL_AT set it kills itself once a checkpoint at that step of run 2 is written
CHILD = textwrap.dedent("""
    import os, signal, sys, torch
    torch.set_num_threads(1)
    import scale_sae.trainer as trainer_module
    from scale_sae.reproduce import reproduce, reproduce_presets
    out, results, kill_at = sys.argv[1], sys.argv[2], int(os.environ.get("KILL_AT", "0"))
    save = trainer_module.Trainer.save
    def save_then_maybe_die(self, path, **extra):
        save(self, path, **extra)
        if kill_at and "scale-e2-k2" in str(path) and self.step == kill_at: os.kill(os.getpid(), signal.SIGKILL)
    trainer_module.Trainer.save = save_then_maybe_die
    cfg = reproduce_presets()["tiny"].replace(n_steps=24, ckpt_every=8, out_dir=out, device="cpu")
    reproduce(cfg, results, stages=(1,), only=%r, progress=False)
""" % ONLY)

TIMING = {"wall_seconds", "finished", "train_seconds"}


def run_child(tmp, name, kill_at=None):
    env = dict(os.environ, CI="true", **({"KILL_AT": str(kill_at)} if kill_at else {}))
    out, results = tmp / name / "runs", tmp / name / "results.json"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(out), str(results)], env=env, capture_output=True, text=True,
                          timeout=900)
    return proc, results


def comparable(entry):
    "An entry without what depends on the clock."
    entry = {n: v for n, v in entry.items() if n not in TIMING}
    entry["metrics"] = {n: v for n, v in entry["metrics"].items() if n not in TIMING}
    return entry


def test_kill_9_mid_run_resumes_to_the_uninterrupted_results(tmp_path):
    proc, clean_file = run_child(tmp_path, "clean")
    assert proc.returncode == 0, proc.stderr[-3000:]
    clean = json.loads(clean_file.read_text())["runs"]
    assert sorted(clean) == sorted(ONLY)

    proc, file = run_child(tmp_path, "killed", kill_at=16)
    assert proc.returncode == -9, proc.stderr[-3000:]  # it did die at the planted point
    first = json.loads(file.read_text())["runs"]
    assert list(first) == ["switch-paper-k2"]  # the finished run is in the file, the killed one is not
    assert (tmp_path / "killed" / "runs" / "scale-e2-k2" / "checkpoint.pt").exists()
    assert not list((tmp_path / "killed").rglob("*.tmp*"))

    proc, file = run_child(tmp_path, "killed")
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = json.loads(file.read_text())["runs"]
    assert resumed["switch-paper-k2"] == first["switch-paper-k2"]  # not retrained: the very same entry
    assert sorted(resumed) == sorted(ONLY)
    for name in ONLY:  # resumed from step 16, the run ends where the uninterrupted one did
        a, b = comparable(resumed[name]), comparable(clean[name])
        assert a.keys() == b.keys()
        for key in ("metrics", "milestones", "firing"):
            assert json.dumps(a[key], sort_keys=True) == json.dumps(b[key], sort_keys=True), (name, key)
