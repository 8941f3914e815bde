"""Bad input and faults, one case each: every error names the problem, nothing is lost and nothing passes silently.

The table `ERRORS` holds the cases that must raise: (case, setup-and-call, error type, words the message must hold).
The tests after it cover what is not a single call: kill -9 during a save over a save, locks, reuse of results,
non-finite training, checkpoint fallback, input dtypes, and the command's exit status. Kills at every step of a
write, full disks, untrusted files and the rest of the command line's inputs are in tests/test_robustness.py."""
import contextlib, dataclasses, io, json, multiprocessing, os, random, signal, socket, subprocess, sys, time, warnings
from pathlib import Path

import pytest
import torch

import scale_sae.runs as runs
from scale_sae.cli import main
from scale_sae.core import ScaleSAE
from scale_sae.corpora import hub_unreachable, load_corpus
from scale_sae.lm import load_lm
from scale_sae.moe import MultiExpertSAE
from scale_sae.runs import PRESETS, RunLockedError, run_lock, synthetic_data, train_run
from scale_sae.sae import BaseSAE, TopKSAE
from scale_sae.switch import SwitchSAE
from scale_sae.trainer import Trainer, previous_checkpoint

TINY = PRESETS["tiny"].replace(d_sae=256, n_experts=4, e=2, k=8, batch_size=128, n_steps=12, ckpt_every=4,
                               eval_every=6, log_every=2, lr=1e-3, device="cpu")


def tiny_cfg(tmp, **changes): return TINY.replace(out_dir=str(tmp), **changes)
def tiny_data(cfg): return synthetic_data(cfg, d_in=32, n_features=256, n_eval=256)


def saved_sae(tmp, cls=TopKSAE, **kw):
    "A small SAE saved to tmp/sae; returns its directory."
    torch.manual_seed(0)
    sae = cls(16, 64, 4, **kw) if cls is TopKSAE else cls(16, 64, 4, 4, **kw)
    sae.save(tmp / "sae")
    return tmp / "sae"


def damage(file, how):
    "Truncate, empty, fill with random bytes or flip one bit of `file`."
    raw = file.read_bytes()
    if how == "truncated": file.write_bytes(raw[: len(raw) // 2])
    elif how == "empty": file.write_bytes(b"")
    elif how == "random": file.write_bytes(random.Random(0).randbytes(len(raw)))
    elif how == "bitflip":
        raw = bytearray(raw); raw[len(raw) // 2] ^= 0x10; file.write_bytes(bytes(raw))


def edit_cfg(d, **changes):
    cfg = json.loads((d / "cfg.json").read_text()); cfg.update(changes)
    (d / "cfg.json").write_text(json.dumps(cfg))
    return d


def trained_trainer(n_steps=8):
    torch.manual_seed(0)
    sae = TopKSAE(16, 64, 4)
    trainer = Trainer(sae, n_steps, lr=1e-3)
    trainer.fit(lambda step: torch.randn(64, 16, generator=torch.Generator().manual_seed(step)), progress=False)
    return trainer


def checkpoint_both_damaged(tmp, how):
    "A checkpoint and its previous one, both damaged; returns the path to load."
    trainer = trained_trainer()
    ckpt = tmp / "checkpoint.pt"
    trainer.save(ckpt); trainer.save(ckpt)
    damage(ckpt, how); damage(previous_checkpoint(ckpt), how)
    return ckpt


def nan_checkpoint(tmp):
    "A checkpoint whose weights hold a NaN (written around `save_checkpoint`, which refuses them)."
    state = trained_trainer().state_dict(); state["sae"]["W_dec"][1, 2] = float("inf")
    torch.save(state, tmp / "checkpoint.pt")
    return tmp / "checkpoint.pt"


def nan_weights_dir(tmp):
    "An SAE directory whose weights hold a NaN (written around `save`, which refuses them)."
    from safetensors.torch import load_file, save_file
    d = saved_sae(tmp)
    state = load_file(str(d / "model.safetensors")); state["W_enc"][0, 0] = float("nan")
    save_file(state, str(d / "model.safetensors"))
    cfg = json.loads((d / "cfg.json").read_text()); cfg.pop("weights_sha256")
    (d / "cfg.json").write_text(json.dumps(cfg))
    return d


def prepare_with_tiny_lm(tmp, **changes):
    "`prepare_data` on the tiny LM with the corpus loader replaced by one that fails: checks must come first."
    cfg = PRESETS["tiny"].replace(out_dir=str(tmp), device="cpu", **changes)
    original = runs.load_run_corpus
    def corpus_reached(cfg): raise AssertionError("the corpus was read before ctx_len was checked")
    runs.load_run_corpus = corpus_reached
    try: runs.prepare_data(cfg, progress=False)
    finally: runs.load_run_corpus = original


def cli(argv, tmp):
    "Exit status and stderr of `scale-sae ARGV --out tmp`, with data preparation made to fail the test if reached."
    original = runs.prepare_data
    def data_reached(*a, **kw): raise AssertionError("data was prepared before the settings were checked")
    runs.prepare_data = data_reached
    err = io.StringIO()
    out = [] if argv[0] == "eval" else ["--out", str(tmp)]  # eval writes nothing, so it takes no --out
    try:
        with contextlib.redirect_stderr(err):
            try: status = main(argv + out)
            except SystemExit as usage: status = usage.code  # argparse's own refusals exit 2
    finally: runs.prepare_data = original
    return status, err.getvalue()


def cli_error(argv, expect_status=1):
    def call(tmp):
        status, err = cli(argv, tmp)
        assert status == expect_status, (argv, status, err)
        raise SystemExit(err)  # the table checks the words of what the command printed
    return call


def write_file(name, content):
    def call(tmp):
        (tmp / name).write_bytes(content)
        load_corpus(tmp / name)
    return call


# (case, setup-and-call taking a temporary directory, expected error type, words the message must contain)
ERRORS = [
    # sizes and settings of the SAEs themselves
    ("k float", lambda t: TopKSAE(16, 64, 2.0), TypeError, r"k=2\.0 must be an int"),
    ("e float", lambda t: ScaleSAE(16, 64, 4, 4, e=2.0), TypeError, r"e=2\.0 must be an int"),
    ("n_experts 0", lambda t: SwitchSAE(16, 64, 4, n_experts=0), ValueError, r"n_experts=0 must be at least 1"),
    ("d_in 0", lambda t: TopKSAE(0, 64, 4), ValueError, r"d_in=0 must be at least 1"),
    ("lb_coef negative", lambda t: ScaleSAE(16, 64, 4, 4, lb_coef=-1), ValueError, r"lb_coef=-1"),
    ("dead_tokens negative", lambda t: TopKSAE(16, 64, 4, dead_tokens=-1), ValueError, r"dead_tokens=-1"),
    ("aux_k negative", lambda t: TopKSAE(16, 64, 4, aux_k=-1), ValueError, r"aux_k=-1"),
    ("scaling a string", lambda t: ScaleSAE(16, 64, 4, 4, scaling="false"), TypeError, r"scaling='false' must be true or false"),
    # inputs
    ("empty batch topk", lambda t: TopKSAE(16, 64, 4)(torch.zeros(0, 16)), ValueError, r"empty batch"),
    ("empty batch switch", lambda t: SwitchSAE(16, 64, 4, 4).loss(torch.zeros(0, 16)), ValueError, r"empty batch"),
    ("empty batch scale", lambda t: ScaleSAE(16, 64, 4, 4)(torch.zeros(0, 16)), ValueError, r"empty batch"),
    ("int activations", lambda t: TopKSAE(16, 64, 4)(torch.ones(3, 16, dtype=torch.long)), TypeError, r"floating point.*int64"),
    ("bool activations", lambda t: TopKSAE(16, 64, 4).loss(torch.ones(3, 16, dtype=torch.bool)), TypeError, r"floating point.*bool"),
    ("list activations", lambda t: TopKSAE(16, 64, 4)([[0.0] * 16]), TypeError, r"must be a torch.Tensor"),
    ("wrong width", lambda t: MultiExpertSAE(16, 64, 4, 4)(torch.zeros(3, 8)), ValueError, r"last dim 16"),
    # files of a saved SAE
    ("cfg.json scaling 'false'", lambda t: BaseSAE.load(edit_cfg(saved_sae(t, ScaleSAE), scaling="false")),
     TypeError, r"cfg\.json.*scaling='false' must be true or false"),
    ("cfg.json k float", lambda t: BaseSAE.load(edit_cfg(saved_sae(t), k=4.0)), TypeError, r"cfg\.json.*k=4\.0 must be an int"),
    *[(f"cfg.json {how}", lambda t, how=how: BaseSAE.load((damage(saved_sae(t) / "cfg.json", how), t / "sae")[1]),
       ValueError, r"cfg\.json is not valid JSON.*save the SAE again") for how in ("truncated", "empty", "random")],
    *[(f"weights {how}", lambda t, how=how: BaseSAE.load((damage(saved_sae(t) / "model.safetensors", how), t / "sae")[1]),
       ValueError, r"model\.safetensors is corrupted.*save the SAE again") for how in ("truncated", "empty", "random", "bitflip")],
    ("weights unreadable, no checksum", lambda t: BaseSAE.load(
        (damage(edit_cfg(saved_sae(t)) / "model.safetensors", "random"), edit_cfg_drop_digest(t / "sae"))[1]),
     ValueError, r"model\.safetensors cannot be read as safetensors"),
    ("weights NaN", lambda t: BaseSAE.load(nan_weights_dir(t)), ValueError, r"model\.safetensors.*NaN or infinite values in W_enc"),
    ("save NaN weights", lambda t: nan_sae().save(t / "x"), ValueError, r"refusing to save.*NaN or infinite values in b_dec"),
    ("save over other files", lambda t: ((t / "notes.txt").write_text("mine"), TopKSAE(16, 64, 4).save(t))[1],
     FileExistsError, r"holds other files \(notes\.txt\)"),
    # checkpoints
    *[(f"checkpoint {how}", lambda t, how=how: Trainer(TopKSAE(16, 64, 4), 8, lr=1e-3).load(checkpoint_both_damaged(t, how)),
       ValueError, r"no usable checkpoint: .*checkpoint\.pt.*--no-resume") for how in ("truncated", "empty", "random", "bitflip")],
    ("checkpoint NaN weights", lambda t: Trainer(TopKSAE(16, 64, 4), 8, lr=1e-3).load(nan_checkpoint(t)),
     ValueError, r"no usable checkpoint: .*checkpoint\.pt cannot be resumed: NaN or infinite values in W_dec"),
    ("checkpoint other n_steps", lambda t: Trainer(TopKSAE(16, 64, 4), 20, lr=1e-3).load_state_dict(trained_trainer().state_dict()),
     ValueError, r"n_steps=8 but this one has n_steps=20"),
    ("checkpoint other lr", lambda t: Trainer(TopKSAE(16, 64, 4), 8, lr=1e-2).load_state_dict(trained_trainer().state_dict()),
     ValueError, r"base_lr=0\.001 but this one has base_lr=0\.01"),
    # trainer settings
    ("trainer steps 0", lambda t: Trainer(TopKSAE(16, 64, 4), 0), ValueError, r"n_steps=0 must be at least 1"),
    ("trainer bad autocast", lambda t: Trainer(TopKSAE(16, 64, 4), 5, autocast_dtype="float17"), TypeError, r"autocast_dtype='float17'"),
    ("trainer negative lr", lambda t: Trainer(TopKSAE(16, 64, 4), 5, lr=-1.0), ValueError, r"lr=-1\.0"),
    # run configurations
    ("config steps 0", lambda t: TINY.replace(n_steps=0), ValueError, r"n_steps=0 must be at least 1 \(--n-steps\)"),
    ("config steps -5", lambda t: TINY.replace(n_steps=-5), ValueError, r"n_steps=-5 must be at least 1"),
    ("config ckpt_every 0", lambda t: TINY.replace(ckpt_every=0), ValueError, r"ckpt_every=0 must be at least 1"),
    ("config ckpt_every -1", lambda t: TINY.replace(ckpt_every=-1), ValueError, r"ckpt_every=-1 must be at least 1"),
    ("config autocast float17", lambda t: TINY.replace(autocast="float17"), ValueError, r"autocast='float17' is not a dtype"),
    ("config eval_ctxs 0", lambda t: TINY.replace(eval_ctxs=0), ValueError, r"eval_ctxs=0 must be at least 1"),
    ("config k float", lambda t: TINY.replace(k=2.0), TypeError, r"k=2\.0 must be an int"),
    ("config bool as string", lambda t: TINY.replace(streaming="false"), TypeError, r"streaming='false' must be true or false"),
    ("config nonfinite", lambda t: TINY.replace(nonfinite="ignore"), ValueError, r"nonfinite='ignore' must be 'raise' or 'skip'"),
    ("run e 99", lambda t: train_run(tiny_cfg(t, e=99), "scale"), ValueError, r"e=99 active experts must be between 1 and n_experts=4"),
    ("ctx_len beyond positions", lambda t: prepare_with_tiny_lm(t, ctx_len=300), ValueError,
     r"ctx_len=300 exceeds the 256 positions.*--ctx-len"),
    # the command line: exit status 1, the problem named, nothing prepared
    ("cli steps 0", cli_error(["train", "--arch", "topk", "--steps", "0"]), SystemExit, r"n_steps=0 must be at least 1"),
    ("cli steps -5", cli_error(["train", "--arch", "topk", "--steps", "-5"]), SystemExit, r"n_steps=-5"),
    ("cli ckpt-every 0", cli_error(["train", "--arch", "topk", "--ckpt-every", "0"]), SystemExit, r"ckpt_every=0"),
    ("cli ckpt-every -1", cli_error(["train", "--arch", "topk", "--ckpt-every", "-1"]), SystemExit, r"ckpt_every=-1"),
    ("cli autocast float17", cli_error(["train", "--arch", "scale", "--autocast", "float17"], expect_status=2), SystemExit,
     r"--autocast: expected one of float16, bfloat16, float32, none; got 'float17'"),
    ("cli eval-ctxs 0", cli_error(["compare", "--eval-ctxs", "0"]), SystemExit, r"eval_ctxs=0 must be at least 1"),
    ("cli compare e 99", cli_error(["compare", "--e", "99"]), SystemExit, r"e=99 active experts"),
    ("cli train e 2,99", cli_error(["train", "--arch", "scale", "--e", "2,99"]), SystemExit, r"e=99 active experts"),
    ("cli compare into a locked out", lambda t: ((t / ".lock").write_text(json.dumps(dict(
        pid=os.getpid(), host=socket.gethostname(), since="now", command="scale-sae compare"))), cli_error(["compare"])(t)),
     SystemExit, rf"being written by another run: pid {os.getpid()} on .*scale-sae compare"),
    ("cli eval damaged sae", lambda t: (damage(saved_sae(t) / "cfg.json", "random"), cli_error(["eval", str(t / "sae")])(t)),
     SystemExit, r"cfg\.json is not valid JSON"),
    # corpora and models
    ("corpus empty file", write_file("empty.txt", b""), ValueError, r"empty\.txt is empty"),
    ("corpus binary file", write_file("data.txt", bytes(range(256)) * 40), ValueError, r"data\.txt is binary"),
    ("corpus not utf-8", write_file("old.txt", "naïve café".encode("latin-1") * 10), ValueError, r"old\.txt is not UTF-8"),
    ("corpus whitespace", write_file("blank.txt", b"\n \n\t\n"), ValueError, r"blank\.txt holds only whitespace"),
    ("model folder without config", lambda t: load_lm(t), ValueError, r"is not a model folder: it has no config\.json"),
]


def edit_cfg_drop_digest(d):
    cfg = json.loads((d / "cfg.json").read_text()); cfg.pop("weights_sha256", None)
    (d / "cfg.json").write_text(json.dumps(cfg))
    return d


def nan_sae():
    sae = TopKSAE(16, 64, 4)
    with torch.no_grad(): sae.b_dec[0] = float("nan")
    return sae


@pytest.mark.parametrize("call,error,words", [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_error_names_the_problem(call, error, words, tmp_path):
    with pytest.raises(error, match=words): call(tmp_path)


def test_every_case_is_distinct():
    assert len({c[0] for c in ERRORS}) == len(ERRORS) >= 50


# ---- kill -9 during a save over an existing save: tests/test_robustness.py kills the writer at every step

def test_stale_leftovers_are_cleaned_and_modes_normal(tmp_path):
    path = saved_sae(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"]); dead.wait()
    (tmp_path / f".sae.tmp-{dead.pid}-x").mkdir()
    (tmp_path / f".sae.tmp-{dead.pid}-x" / "model.safetensors").write_bytes(b"partial")
    TopKSAE.load(path)  # loading alone cleans what a dead writer left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sae"]
    mask = os.umask(0); os.umask(mask)
    assert {p.stat().st_mode & 0o777 for p in path.iterdir()} == {0o666 & ~mask}


def test_set_aside_save_is_recovered(tmp_path):
    "A writer killed between its two renames (no exchange) leaves the old directory set aside: it is put back."
    path = saved_sae(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"]); dead.wait()
    os.rename(path, tmp_path / f".sae.old-{dead.pid}-x")
    assert torch.equal(TopKSAE.load(path).W_dec, _fresh_sae().W_dec)


def _fresh_sae():
    torch.manual_seed(0)
    return TopKSAE(16, 64, 4)


# ---- locks

def test_second_writer_is_refused_naming_the_holder(tmp_path):
    cfg = tiny_cfg(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = tmp_path / ".topk.lock"
        lock.write_text(json.dumps(dict(pid=holder.pid, host=socket.gethostname(), since="now", command="scale-sae compare")))
        with pytest.raises(RunLockedError, match=rf"pid {holder.pid} on {socket.gethostname()}.*scale-sae compare.*--out"):
            train_run(cfg, "topk", data=tiny_data(cfg), progress=False)
        assert not (tmp_path / "topk").exists(), "the refused run must not have written anything"
    finally: holder.kill(); holder.wait()
    # the holder is gone now: its lock is stale and taken over, and released after the run
    run = train_run(cfg, "topk", data=tiny_data(cfg), progress=False)
    assert run["metrics"] is not None and not lock.exists()


def test_two_processes_into_one_out_dir(tmp_path):
    "Two commands into the same --out at once: one runs, the other exits 1 naming it."
    script = ("import sys, time, scale_sae.runs as r\n"
              "with r.run_lock(sys.argv[1]): print('locked', flush=True); time.sleep(3)\n")
    first = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / ".lock")], stdout=subprocess.PIPE, text=True)
    assert first.stdout.readline().strip() == "locked"
    with pytest.raises(RunLockedError, match=rf"pid {first.pid}"):
        with run_lock(tmp_path / ".lock"): pass
    assert first.wait() == 0
    with run_lock(tmp_path / ".lock"): pass  # free again once the first has finished


# ---- results carry their settings

def test_finished_run_is_reused_only_with_the_same_settings(tmp_path):
    cfg = tiny_cfg(tmp_path)
    data = tiny_data(cfg)
    first = train_run(cfg, "topk", data=data, progress=False)
    file = tmp_path / "topk" / "metrics.json"
    saved = json.loads(file.read_text())
    assert saved["settings"]["eval_ctxs"] == cfg.eval_ctxs and saved["settings"]["arch"] == "topk"
    saved["mse"] = -1.0; file.write_text(json.dumps(saved))  # a marker: is the file reused?
    assert train_run(cfg, "topk", data=data, progress=False)["metrics"]["mse"] == -1.0
    again = train_run(cfg.replace(eval_ctxs=2), "topk", data=data, progress=False)  # evaluation settings changed
    assert again["metrics"]["mse"] == pytest.approx(first["metrics"]["mse"]) and again["metrics"]["mse"] != -1.0
    assert json.loads(file.read_text())["settings"]["eval_ctxs"] == 2


# ---- non-finite training

def poisoned(data, bad_step):
    "RunData whose batch of step `bad_step` holds one NaN."
    def make_batches():
        def stream():
            for step, x in enumerate(data.make_batches()):
                if step == bad_step: x = x.clone(); x[0, 0] = float("nan")
                yield x
        return stream()
    return dataclasses.replace(data, make_batches=make_batches)


def test_nan_batch_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = tiny_cfg(tmp_path)
    with pytest.raises(FloatingPointError, match=r"non-finite loss or gradient at step 6.*nonfinite='skip'"):
        train_run(cfg, "scale", data=poisoned(tiny_data(cfg), 6), progress=False)
    state = torch.load(tmp_path / "scale" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 4 and all(torch.isfinite(t).all() for t in state["sae"].values() if t.is_floating_point())
    assert not (tmp_path / "scale" / "sae").exists()
    # resumed with nonfinite="skip", the same data costs one batch and the run completes with finite weights
    run = train_run(cfg.replace(nonfinite="skip"), "scale", data=poisoned(tiny_data(cfg), 6), progress=False)
    assert run["metrics"]["skipped_batches"] == 1 and all(torch.isfinite(p).all() for p in run["sae"].parameters())


def test_huge_learning_rate_is_stopped(tmp_path):
    cfg = tiny_cfg(tmp_path, lr=1e6)
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        train_run(cfg, "topk", data=tiny_data(cfg), progress=False)


def test_cli_exits_nonzero_when_training_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "prepare_data", lambda cfg, progress=True: poisoned(tiny_data(cfg), 2))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()) as out:
        status = main(["train", "--arch", "topk", "--preset", "tiny", "--d-sae", "256", "--k", "8", "--batch-size", "128",
                       "--steps", "12", "--ckpt-every", "4", "--lr", "1e-3", "--device", "cpu", "--quiet", "--out", str(tmp_path)])
    assert status == 1 and "non-finite loss or gradient at step 2" in err.getvalue() and "saved" not in out.getvalue()


# ---- checkpoints: fallback and bit-exact resume from it

def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    cfg = tiny_cfg(tmp_path)
    data = tiny_data(cfg)
    straight = train_run(cfg, "topk", data=data, name="straight", progress=False, final_eval=False)
    train_run(cfg, "topk", data=data, name="broken", until=9, progress=False)  # checkpoints at 4, 8 and 9
    ckpt = tmp_path / "broken" / "checkpoint.pt"
    damage(ckpt, "bitflip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = train_run(cfg, "topk", data=data, name="broken", progress=False)
    assert any("previous checkpoint" in str(w.message) and str(ckpt) in str(w.message) for w in caught)
    for (n, a), b in zip(straight["sae"].state_dict().items(), resumed["sae"].state_dict().values()):
        assert torch.equal(a, b), n


# ---- kill -9 during training (checkpoint writes included), then resume: bit-exact

def _slow_run_cfg(out): return tiny_cfg(out, n_steps=40, ckpt_every=1)


def _train_killed(out, batch, save):
    """Child process: the run of `_slow_run_cfg`, killed with SIGKILL when it draws batch number `batch`, or half-way
    through writing its `save`-th checkpoint (the file cut short first): deterministic points, no timing."""
    cfg = _slow_run_cfg(out)
    data = tiny_data(cfg)
    saves, real_save = [0], torch.save
    def save_then_die(obj, f, *a, **kw):
        real_save(obj, f, *a, **kw)
        saves[0] += 1
        if saves[0] == save: os.truncate(f, os.path.getsize(f) // 2); os.kill(os.getpid(), signal.SIGKILL)
    torch.save = save_then_die
    def batches():
        for i, x in enumerate(data.make_batches()):
            if i == batch: os.kill(os.getpid(), signal.SIGKILL)
            yield x
    train_run(cfg, "topk", data=dataclasses.replace(data, make_batches=batches), name="run", progress=False, final_eval=False)


@pytest.mark.filterwarnings("ignore:resuming from the previous checkpoint")  # a kill between the two renames
@pytest.mark.parametrize("batch,save", [(3, None), (17, None), (38, None), (None, 1), (None, 9), (None, 30)],
                         ids=["batch 3", "batch 17", "batch 38", "checkpoint 1", "checkpoint 9", "checkpoint 30"])
def test_kill_during_training_then_resume_is_bit_exact(tmp_path, batch, save):
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "scale_sae.runs"])
    cfg = _slow_run_cfg(tmp_path / "straight")
    straight = train_run(cfg, "topk", data=tiny_data(cfg), name="run", progress=False, final_eval=False)
    out = tmp_path / "killed"
    child = ctx.Process(target=_train_killed, args=(out, batch, save), daemon=True); child.start(); child.join()
    assert child.exitcode == -signal.SIGKILL, "the kill must land before the run ends"
    resumed = train_run(_slow_run_cfg(out), "topk", data=tiny_data(cfg), name="run", progress=False, final_eval=False)
    for (n, a), b in zip(straight["sae"].state_dict().items(), resumed["sae"].state_dict().values()):
        assert torch.equal(a, b), n


# ---- inputs that are accepted

def test_other_float_dtypes_are_converted_and_numpy_accepted():
    sae = _fresh_sae()
    x = torch.randn(5, 16)
    reference = sae(x)
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        out = sae(x.to(dtype))
        assert out.dtype == torch.float32  # the SAE's own dtype, as `_flat` documents
        assert torch.allclose(out, sae(x.to(dtype).float()))
    assert torch.equal(sae(x.numpy()), reference)
    assert "converted to the SAE's own" in __import__("inspect").getsource(BaseSAE._flat)


# ---- names that are neither local nor reachable

@pytest.mark.skipif(not hub_unreachable(), reason="the hub is reachable from here")
@pytest.mark.parametrize("load,name", [(load_corpus, "no_such_corpus"), (load_corpus, "someone/no_such_corpus"),
                                       (load_lm, "no_such_model")])
def test_unknown_name_fails_fast_offline(load, name):
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match=rf"'{name}' is not a local file or folder.*cannot be fetched"):
        load(name)
    assert time.perf_counter() - start < 5
