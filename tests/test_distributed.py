"""Data-parallel training over torch.distributed (gloo, on the CPU): two processes that each train on half of every
batch end with the weights of one process trained on the whole batches; resuming works with another number of
processes; bad launches fail with a message instead of hanging; `torchrun ... -m scale_sae.cli train` survives kill -9."""
import json, os, signal, socket, subprocess, sys, textwrap, time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

# One training run, in whichever process runs it: the `world` processes of a launch each call `train` with their rank.
# Batches are float64 and a function of the step only; process r trains on the r-th half of each.
WORKER = textwrap.dedent("""
    import sys, torch
    from pathlib import Path
    from scale_sae.synthetic import SyntheticData
    from scale_sae.trainer import Trainer

    N_STEPS, BATCH = 24, 64
    ARCHS = ("scale", "topk")

    def build(arch):
        torch.manual_seed(0)
        if arch == "topk":
            from scale_sae.sae import TopKSAE
            # a short dead window, so that latents die and AuxK (with its batch variance) trains them
            return TopKSAE(16, 128, k=4, dead_tokens=2 * BATCH).double()
        from scale_sae.core import ScaleSAE
        return ScaleSAE(16, 64, k=4, n_experts=4, e=2, dead_tokens=2 * BATCH).double()  # load balancing on (lb_coef=3)

    def batch(step):
        data = SyntheticData(16, 64, avg_l0=4, seed=0)
        return data.sample(BATCH, generator=torch.Generator().manual_seed(1000 + step)).double()

    def train(arch, until, state_in=None, rank=0, world=1):
        trainer = Trainer(build(arch), N_STEPS, lr=3e-3)
        if state_in: trainer.load_state_dict(torch.load(state_in, weights_only=True))
        if world > 1: trainer.data_parallel()
        trainer.fit(lambda step: batch(step).chunk(world)[rank], until=until, progress=False)
        return trainer

    if __name__ == "__main__":  # one launch of several processes does every multi-process run the tests compare
        out = Path(sys.argv[1])
        from scale_sae.distributed import exit_process
        from scale_sae.runs import init_data_parallel
        rank, world = init_data_parallel("cpu", timeout_s=60)
        save = lambda trainer, name: torch.save(trainer.state_dict(), out / f"{name}.rank{rank}.pt")
        for arch in ARCHS:
            trainer = train(arch, N_STEPS // 2, rank=rank, world=world)
            save(trainer, f"{arch}-half")
            trainer.fit(lambda step: batch(step).chunk(world)[rank], progress=False)
            save(trainer, f"{arch}-full")
        save(train("topk", N_STEPS, out / "topk-half-one-process.pt", rank, world), "topk-resumed")
        # as the command line ends a launch: the group left, the interpreter's teardown (where gloo's threads can
        # abort a process whose work all succeeded) skipped
        exit_process(0)
""")
ns = {}
exec(WORKER, ns)  # the same `train` in this process: the single-process reference
N_STEPS = ns["N_STEPS"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

def launch(world, script, args, timeout=300):
    "Start `world` processes as torchrun would (env:// rendezvous); their (returncode, stderr) once all have ended."
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(world), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", script, *map(str, args)], env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
                              stderr=subprocess.PIPE, text=True) for r in range(world)]
    try: return [(p.wait(timeout), p.stderr.read()) for p in procs]
    finally:
        for p in procs: p.kill(); p.wait()

@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    "Every run of the two-process launch, by name (and rank), plus the single-process runs they are compared with."
    out = tmp_path_factory.mktemp("dp")
    torch.save(ns["train"]("topk", N_STEPS // 2).state_dict(), out / "topk-half-one-process.pt")
    for rc, err in launch(2, WORKER, [out]): assert rc == 0, err[-3000:]
    runs = {p.name[:-len(".pt")]: torch.load(p, weights_only=True) for p in out.glob("*.rank*.pt")}
    return runs, {arch: ns["train"](arch, N_STEPS) for arch in ns["ARCHS"]}

def assert_same_weights(a, b, atol=1e-5):
    assert a.keys() == b.keys()
    for n in a:
        assert (a[n].double() - b[n].double()).abs().max().item() <= atol, n


@pytest.mark.parametrize("arch", ["scale", "topk"])
def test_two_processes_equal_one(arch, two_processes):
    runs, single = two_processes
    one, two = single[arch], runs[f"{arch}-full.rank0"]
    for a, b in zip(two["sae"].values(), runs[f"{arch}-full.rank1"]["sae"].values()):
        assert torch.equal(a, b)  # every process holds the same weights
    assert two["step"] == N_STEPS
    assert_same_weights(one.sae.state_dict(), two["sae"])  # the dead-latent counters are compared too
    # the run exercised what needs all-reduces: load balancing (Scale), AuxK on dead latents (TopK)
    assert all(("lb" if arch == "scale" else "aux") in rec for rec in one.history[-5:])
    assert len(one.history) == len(two["history"]) == N_STEPS
    for rec_one, rec_two in zip(one.history, two["history"]):  # logged losses are the whole batch's
        assert rec_one["step"] == rec_two["step"] and abs(rec_one["loss"] - rec_two["loss"]) <= 1e-6 * abs(rec_one["loss"])
    assert one.history[-1]["mse"] < one.history[0]["mse"]


def test_resume_with_another_number_of_processes(two_processes, tmp_path):
    runs, single = two_processes
    straight = single["topk"].sae.state_dict()
    # two processes, then one
    assert runs["topk-half.rank0"]["step"] == N_STEPS // 2
    torch.save(runs["topk-half.rank0"], tmp_path / "after_two.pt")
    assert_same_weights(straight, ns["train"]("topk", N_STEPS, tmp_path / "after_two.pt").sae.state_dict())
    # one process, then two
    assert_same_weights(straight, runs["topk-resumed.rank0"]["sae"])


def test_cache_shares_make_up_the_batch(tmp_path):
    "Process r of W reads the r-th consecutive part of the batch one process would read, from any shard."
    import numpy as np
    from scale_sae.cache import ActivationCache, file_sha256
    acts = np.random.default_rng(0).standard_normal((300, 4)).astype(np.float16)
    shards = []
    for i, part in enumerate(np.split(acts, [70, 160])):  # three shards of unequal sizes
        entry = dict(acts=f"shard-{i:05d}.acts.npy", tokens=f"shard-{i:05d}.tokens.npy", n_rows=len(part))
        np.save(tmp_path / entry["acts"], part); np.save(tmp_path / entry["tokens"], np.zeros((1, len(part)), np.int32))
        entry.update(acts_sha256=file_sha256(tmp_path / entry["acts"]), tokens_sha256=file_sha256(tmp_path / entry["tokens"]))
        shards.append(entry)
    (tmp_path / "manifest.json").write_text(json.dumps(dict(settings=dict(layer=0, dtype="float16"), shards=shards, complete=True)))
    cache = ActivationCache(tmp_path)
    whole = cache.batch_fn(60, seed=3)
    for world in (2, 3, 4):
        parts = [cache.batch_fn(60, 3, None, rank, world) for rank in range(world)]
        for step in (0, 4, 7):  # 7 is in the second epoch
            assert torch.equal(torch.cat([part(step) for part in parts]), whole(step))
    with pytest.raises(ValueError, match="multiple of 7"): cache.batch_fn(60, 3, None, 0, 7)


def test_batch_that_does_not_split_fails_before_work(monkeypatch, capsys):
    from scale_sae.cli import main, run_command
    monkeypatch.setenv("WORLD_SIZE", "3")
    t0 = time.time()
    with pytest.raises(ValueError, match="does not split evenly over 3 processes"):
        run_command(["train", "--arch", "scale", "--preset", "tiny", "--batch-size", "1000", "--quiet"])
    # the command itself: one line naming the problem, exit status 1
    assert main(["train", "--arch", "scale", "--preset", "tiny", "--batch-size", "1000", "--quiet"]) == 1
    assert "does not split evenly over 3 processes" in capsys.readouterr().err
    assert time.time() - t0 < 5  # no model loaded, no process waited for
    with pytest.raises(SystemExit, match="one process"):
        main(["eval", "some/sae", "--preset", "tiny"])


STALLED = textwrap.dedent("""
    import os, sys, time, torch
    from scale_sae.runs import init_data_parallel
    from scale_sae.sae import TopKSAE
    from scale_sae.trainer import Trainer
    rank, world = init_data_parallel("cpu", timeout_s=3)
    if rank == 1: time.sleep(60)  # alive but never joins a collective
    Trainer(TopKSAE(8, 32, k=2), 10).data_parallel()
""")

def test_a_missing_process_is_an_error_not_a_hang():
    t0 = time.time()
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2", OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", STALLED], env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    try: rc, err = procs[0].wait(timeout=50), procs[0].stderr.read()
    finally:
        for p in procs: p.kill(); p.wait()
    assert rc != 0 and "timed out" in err.lower(), err[-2000:]
    assert time.time() - t0 < 50


# --- the command line under torchrun -------------------------------------------------------------------------------

N_CLI_STEPS = 300
def cli_args(out, corpus):
    # small sizes: the tiny LM on a small local corpus, 20 cached batches of 256 tokens per run
    return ["--preset", "tiny", "--arch", "scale", "--corpus", str(corpus), "--eval-docs", "40", "--eval-ctxs", "8",
            "--ctx-len", "64", "--n-ctxs", "64", "--cache-batches", "20", "--batch-size", "256", "--d-sae", "512",
            "--n-experts", "8", "--k", "8", "--steps", str(N_CLI_STEPS), "--ckpt-every", "20", "--log-every", "10",
            "--eval-every", "1000", "--device", "cpu", "--quiet", "--out", str(out)]

def torchrun(out, corpus):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "scale_sae.cli", "train", *cli_args(out, corpus)]
    return subprocess.Popen(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

def children(pid):
    "Process ids whose parent is `pid`."
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try: fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError: continue
        if int(fields[1]) == pid: kids.append(int(stat.parent.name))
    return kids

def alive(pid):
    try: return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError: return False

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    import random
    rng = random.Random(0)
    words = "the of a to in is that for it as with be on not this by are or from at an which have".split()
    words += [f"w{i}" for i in range(300)]
    path = tmp_path_factory.mktemp("corpus") / "docs.txt"
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(20, 120))) for _ in range(1200)))
    return path

@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find torchrun's workers")
def test_torchrun_train_survives_kill_9(tmp_path, corpus):
    straight = torchrun(tmp_path / "straight", corpus)
    log = straight.communicate(timeout=600)[0]
    assert straight.returncode == 0, log[-3000:]
    assert sorted(os.listdir(tmp_path / "straight")) == ["scale"]  # one run directory, written once

    killed = tmp_path / "killed"
    proc = torchrun(killed, corpus)
    ckpt, deadline = killed / "scale" / "checkpoint.pt", time.time() + 600
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline: time.sleep(0.05)
    workers = children(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL); proc.wait()
    assert len(workers) == 2
    # torchrun starts its workers in sessions of their own; they notice the launcher is gone and stop
    deadline = time.time() + 15
    while any(alive(w) for w in workers) and time.time() < deadline: time.sleep(0.1)
    assert not any(alive(w) for w in workers), "workers outlived their torchrun"
    step = torch.load(ckpt, weights_only=True)["step"]
    assert 0 < step < N_CLI_STEPS and not (killed / "scale" / "metrics.json").exists(), "the kill must land mid-run"

    again = torchrun(killed, corpus)
    log = again.communicate(timeout=600)[0]
    assert again.returncode == 0, log[-3000:]
    assert "saved:" in log and log.count("saved:") == 1  # process 0 alone reports
    curve = lambda run: [{n: v for n, v in rec.items() if n != "time"}  # wall time is the one thing allowed to differ
                         for rec in json.loads((run / "scale" / "history.json").read_text())]
    assert curve(killed) == curve(tmp_path / "straight") and len(curve(killed)) == N_CLI_STEPS // 10
    a, b = load_file(killed / "scale" / "sae" / "model.safetensors"), load_file(tmp_path / "straight" / "scale" / "sae" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
