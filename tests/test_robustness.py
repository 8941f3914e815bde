"""Files that cannot run code, writes that are whole or absent, loaders that trust nothing they read.

Each test below is one case of a checkpoint, save, export, cache or command-line input that once ran code, lost or
mixed data, passed silently or failed with a message the user could not act on; each asserts the outcome.
The kill tests are deterministic: the writer kills itself with SIGKILL at its n-th file-system step (before, during
or after each write, rename, sync and removal), and every step is tried, so no result depends on timing."""
import contextlib, io, json, multiprocessing, os, pickle, resource, shutil, signal, subprocess, sys, threading, warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import scale_sae.cache as cache_mod
import scale_sae.runs as runs
from scale_sae.cache import ActivationCache, DiskFullError
from scale_sae.cli import build_parser, config_from_args, main
from scale_sae.core import ScaleSAE
from scale_sae.interop import from_saelens, to_saelens
from scale_sae.runs import PRESETS, synthetic_data, train_run
from scale_sae.sae import BaseSAE, TopKSAE
from scale_sae.switch import SwitchSAE
from scale_sae.trainer import Trainer, load_checkpoint, save_checkpoint, train_sae

TINY = PRESETS["tiny"].replace(d_sae=256, n_experts=4, e=2, k=8, batch_size=128, n_steps=8, ckpt_every=4,
                               eval_every=4, log_every=2, lr=1e-3, device="cpu")


def numbered_sae(seed, d_in=16, d_sae=64):
    torch.manual_seed(seed)
    return TopKSAE(d_in, d_sae, 4)


def trained(n_steps=4):
    trainer = Trainer(numbered_sae(0), n_steps, lr=1e-3)
    trainer.fit(lambda step: torch.randn(32, 16, generator=torch.Generator().manual_seed(step)), progress=False)
    return trainer


def cli(argv):
    "(exit status, stderr) of `scale-sae ARGV`."
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try: status = main(argv)
        except SystemExit as exit:  # argparse exits 2; a SystemExit carrying a message exits 1, printing it
            status = exit.code if isinstance(exit.code, int) else 1
            if not isinstance(exit.code, int): print(exit.code, file=sys.stderr)
    return status, err.getvalue()


def no_data(monkeypatch):
    "Make data preparation fail the test: the command must stop before it."
    def reached(*a, **kw): raise AssertionError("data was prepared before the input was checked")
    monkeypatch.setattr(runs, "prepare_data", reached)


# ---- code execution from a file

class Payload:
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_a_pickled_payload_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    ckpt = tmp_path / "checkpoint.pt"
    trainer = trained()
    state = {**trainer.state_dict(), "note": Payload(marker)}
    from scale_sae.trainer import state_digest
    torch.save({**state, "sha256": "0"}, ckpt)  # a forger can recompute the checksum: it must not matter
    with pytest.raises(ValueError, match=r"could run code.*posix\.system|could run code"):
        Trainer(numbered_sae(0), 4, lr=1e-3).load(ckpt)
    # the digest recomputed over the payload does not help it either
    torch.save({**state, "sha256": state_digest({**state, "note": None})}, ckpt)
    with pytest.raises(ValueError, match="could run code"): load_checkpoint(ckpt)
    assert not marker.exists(), "unpickling the checkpoint ran the payload"


def test_checkpoints_of_this_package_load_weights_only(tmp_path):
    trainer = trained()
    trainer.save(tmp_path / "c.pt", run_config=TINY.to_dict(), arch="topk")
    back = Trainer(numbered_sae(0), 4, lr=1e-3).load(tmp_path / "c.pt")
    assert back.step == 4 and torch.equal(back.sae.W_dec, trainer.sae.W_dec)


# ---- lost or mixed data: run folders

def test_no_resume_refuses_a_folder_that_is_not_a_run(tmp_path, monkeypatch):
    no_data(monkeypatch)
    (tmp_path / "topk").mkdir()
    (tmp_path / "topk" / "thesis.tex").write_text("mine")
    status, err = cli(["train", "--arch", "topk", "--preset", "tiny", "--no-resume", "--out", str(tmp_path)])
    assert status == 1 and "holds files a run does not write (thesis.tex)" in err
    assert (tmp_path / "topk" / "thesis.tex").read_text() == "mine"


def test_a_users_config_json_is_not_overwritten(tmp_path):
    cfg = TINY.replace(out_dir=str(tmp_path))
    (tmp_path / "topk").mkdir()
    (tmp_path / "topk" / "config.json").write_text('{"my": "settings"}')
    with pytest.raises(FileExistsError, match=r"config\.json \(not a run's\)"):
        train_run(cfg, "topk", data=synthetic_data(cfg, d_in=16, n_features=256, n_eval=64), progress=False)
    assert (tmp_path / "topk" / "config.json").read_text() == '{"my": "settings"}'


def test_no_resume_still_starts_a_real_run_over(tmp_path):
    cfg = TINY.replace(out_dir=str(tmp_path))
    data = synthetic_data(cfg, d_in=16, n_features=256, n_eval=64)
    first = train_run(cfg, "topk", data=data, progress=False)
    again = train_run(cfg, "topk", data=data, progress=False, resume=False)
    assert torch.equal(first["sae"].W_dec, again["sae"].W_dec) and again["metrics"] is not None


def test_replaced_sae_is_evaluated_again(tmp_path):
    cfg = TINY.replace(out_dir=str(tmp_path))
    data = synthetic_data(cfg, d_in=16, n_features=256, n_eval=64)
    first = train_run(cfg, "topk", data=data, progress=False)
    numbered_sae(5, d_in=16, d_sae=256).save(tmp_path / "topk" / "sae")  # someone else's SAE in its place
    again = train_run(cfg, "topk", data=data, progress=False)
    # not the old metrics.json for another SAE: the run's own SAE is saved back and evaluated
    assert torch.equal(BaseSAE.load(tmp_path / "topk" / "sae").W_dec, first["sae"].W_dec)
    assert again["metrics"]["mse"] == pytest.approx(first["metrics"]["mse"])


def test_trainer_checkpoint_in_a_run_folder_is_named(tmp_path):
    cfg = TINY.replace(out_dir=str(tmp_path))
    (tmp_path / "topk").mkdir()
    trained().save(tmp_path / "topk" / "checkpoint.pt")
    with pytest.raises(ValueError, match="written by Trainer.save, not by a run"):
        train_run(cfg, "topk", data=synthetic_data(cfg, d_in=16, n_features=256, n_eval=64), progress=False)


# ---- lost or mixed data: SAELens exports

def test_export_into_our_own_save_is_refused(tmp_path):
    sae = numbered_sae(0)
    sae.save(tmp_path / "sae")
    with pytest.raises(FileExistsError, match="holds an SAE saved by this package"): to_saelens(sae, tmp_path / "sae")
    assert torch.equal(BaseSAE.load(tmp_path / "sae").W_dec, sae.W_dec)


def test_export_next_to_a_users_file_is_refused(tmp_path):
    (tmp_path / "lens").mkdir(); (tmp_path / "lens" / "README.md").write_text("mine")
    with pytest.raises(FileExistsError, match=r"holds other files \(README\.md\)"): to_saelens(numbered_sae(0), tmp_path / "lens")
    assert (tmp_path / "lens" / "README.md").read_text() == "mine"


def test_reexport_without_activations_leaves_no_old_sparsity(tmp_path):
    to_saelens(numbered_sae(0), tmp_path / "lens", activations=torch.randn(64, 16))
    assert (tmp_path / "lens" / "sparsity.safetensors").exists()
    to_saelens(numbered_sae(1), tmp_path / "lens")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lens"]
    assert sorted(p.name for p in (tmp_path / "lens").iterdir()) == ["cfg.json", "sae_weights.safetensors"]


# ---- kill -9 at every step of a write over an earlier one

def _writers():
    "(name, write(obj, path), read(path) -> comparable) for each directory or file the package writes."
    def read_sae(p): return BaseSAE.load(p).W_enc
    def read_lens(p): return from_saelens(p).W_enc
    def write_ckpt(sae, p): save_checkpoint(dict(sae=sae.state_dict(), step=0), p)
    def read_ckpt(p): return load_checkpoint(p)["sae"]["W_enc"]
    return {"save": (lambda sae, p: sae.save(p), read_sae), "to_saelens": (to_saelens, read_lens),
            "checkpoint": (write_ckpt, read_ckpt)}


def _kill_at(point, writer, path, new_seed, use_exchange, counter_file):
    "Child: write SAE `new_seed` over `path`, SIGKILLing itself at file-system step `point` (-1: never; count them)."
    import pathlib, scale_sae.sae as S, scale_sae.interop as I, scale_sae.files as F
    if not use_exchange: F._exchange = lambda a, b: False
    steps = [0]
    def step():
        if steps[0] == point: os.kill(os.getpid(), signal.SIGKILL)
        steps[0] += 1
    def around(owner, name, writes=False):
        real = getattr(owner, name)
        def wrapped(*args, **kwargs):
            step()  # killed just before the call
            out = real(*args, **kwargs)
            if writes:
                if steps[0] == point:  # killed in the middle of this write: the file stops half-way
                    target = Path(args[0] if name == "write_text" else args[1])
                    os.truncate(target, target.stat().st_size // 2)
                    os.kill(os.getpid(), signal.SIGKILL)
                steps[0] += 1
            return out
        setattr(owner, name, wrapped)
    for owner, name in ((os, "rename"), (os, "replace"), (os, "fsync"), (shutil, "rmtree"), (F, "_exchange")):
        around(owner, name)
    for owner, name in ((S, "save_file"), (I, "save_file"), (torch, "save"), (pathlib.Path, "write_text")):
        around(owner, name, writes=True)
    _writers()[writer][0](numbered_sae(new_seed), path)
    step()  # and killed just after the write returned
    Path(counter_file).write_text(str(steps[0]))


@pytest.mark.parametrize("writer,use_exchange", [("save", True), ("save", False), ("to_saelens", True),
                                                 ("to_saelens", False), ("checkpoint", True)],
                         ids=["save", "save two renames", "to_saelens", "to_saelens two renames", "checkpoint"])
def test_kill_at_every_step_leaves_old_or_new(tmp_path, writer, use_exchange):
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "scale_sae.interop"])
    write, read = _writers()[writer]
    path = tmp_path / "out" / ("checkpoint.pt" if writer == "checkpoint" else "sae")
    expected = [numbered_sae(0).W_enc.detach(), numbered_sae(1).W_enc.detach()]
    write(numbered_sae(0), path)
    counter = tmp_path / "steps"
    child = ctx.Process(target=_kill_at, args=(-1, writer, path, 1, use_exchange, counter))  # a dry run counts the steps
    child.start(); child.join()
    n_points = int(counter.read_text())
    write(numbered_sae(0), path)
    assert n_points >= 5, n_points
    seen, trials = set(), 0
    while trials < 20:  # every step at least once, and at least 20 kills
        for point in range(n_points):
            child = ctx.Process(target=_kill_at, args=(point, writer, path, 1, use_exchange, counter))
            child.start(); child.join()
            assert child.exitcode == -signal.SIGKILL, f"the writer must die at step {point}"
            loaded = read(path)
            which = [i for i, w in enumerate(expected) if torch.equal(loaded, w)]
            assert which, f"killed at step {point} of {n_points}: neither the old nor the new content"
            seen.add(which[0]); trials += 1
            leftovers = sorted(p.name for p in path.parent.iterdir() if p.name not in (path.name, "checkpoint.prev.pt"))
            assert not leftovers, f"killed at step {point}: temporaries left after the next read: {leftovers}"
            write(numbered_sae(0), path)  # back to the old content for the next kill
    assert seen == {0, 1}, "some kill points must come before the swap and some after"


# ---- full disks: a file-size limit, and a full filesystem

def _write_under_limit(writer, path, limit, queue):
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # Python ignores SIGXFSZ: writes fail with EFBIG
    try: _writers()[writer][0](numbered_sae(1, d_in=64, d_sae=1024), path)
    except Exception as err: queue.put(f"{type(err).__name__}: {err}")
    else: queue.put("no error")


@pytest.mark.parametrize("writer", ["save", "to_saelens", "checkpoint"])
def test_file_size_limit_leaves_the_old_content_and_no_temporary(tmp_path, writer):
    write, read = _writers()[writer]
    path = tmp_path / ("checkpoint.pt" if writer == "checkpoint" else "sae")
    old = numbered_sae(0, d_in=64, d_sae=1024)
    write(old, path)
    before = read(path).clone()
    ctx = multiprocessing.get_context("forkserver")
    queue = ctx.Queue()
    child = ctx.Process(target=_write_under_limit, args=(writer, path, 100_000, queue)); child.start(); child.join()
    message = queue.get(timeout=10)
    assert message.startswith("DiskFullError") and "free some disk space" in message, message
    assert torch.equal(read(path), before)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@pytest.fixture
def small_filesystem(tmp_path):
    "A 1 MiB tmpfs, where a second save of an SAE of ~0.5 MB cannot fit; skipped where mounting is not allowed."
    mount = tmp_path / "small"; mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try: yield mount
    finally: subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.mark.parametrize("writer", ["save", "to_saelens", "checkpoint"])
def test_full_filesystem_leaves_the_old_content_and_no_temporary(small_filesystem, writer):
    write, read = _writers()[writer]
    path = small_filesystem / ("checkpoint.pt" if writer == "checkpoint" else "sae")
    write(numbered_sae(0, d_in=64, d_sae=1024), path)
    before = read(path).clone()
    with pytest.raises(DiskFullError, match="free some disk space"):
        write(numbered_sae(1, d_in=64, d_sae=1024), path)
    assert torch.equal(read(path), before)
    assert sorted(p.name for p in small_filesystem.iterdir()) == [path.name]


def test_full_filesystem_during_cache_write(small_filesystem):
    with pytest.raises(DiskFullError, match="no space to write"):
        cache_mod._save_npy(small_filesystem / "shard-00000.acts.npy", torch.zeros(2_000_000, dtype=torch.uint8).numpy())
    assert list(small_filesystem.iterdir()) == []


# ---- silent acceptance: a saved SAE's settings, dtype and sizes

@pytest.mark.parametrize("field,value", [("k", 7), ("dead_tokens", 5), ("gate", "hard")])
def test_edited_cfg_json_is_refused_naming_the_field(tmp_path, field, value):
    torch.manual_seed(0)
    sae = SwitchSAE(16, 64, 4, 4) if field == "gate" else numbered_sae(0)
    sae.save(tmp_path / "sae")
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text()); cfg[field] = value
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=rf"{field} is {value!r} there but .* in the weights' copy"):
        BaseSAE.load(tmp_path / "sae")


def test_float64_comes_back_float64(tmp_path):
    sae = numbered_sae(0).double()
    sae.save(tmp_path / "sae")
    back = BaseSAE.load(tmp_path / "sae")
    assert back.W_dec.dtype == torch.float64 and torch.equal(back.W_dec, sae.W_dec)


def test_huge_d_sae_in_an_old_style_save_fails_before_allocating(tmp_path):
    sae = numbered_sae(0); sae.save(tmp_path / "sae")
    save_file(load_file(str(tmp_path / "sae" / "model.safetensors")), str(tmp_path / "sae" / "model.safetensors"))
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text()); cfg.pop("weights_sha256"); cfg["d_sae"] = 10**12
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"W_dec in model\.safetensors is \(64, 16\), but the TopKSAE of its cfg\.json"):
        BaseSAE.load(tmp_path / "sae")


def test_saves_without_the_settings_copy_still_load(tmp_path):
    "A save of an earlier version (no copy of the settings, no dtype) loads as before."
    sae = numbered_sae(0); sae.save(tmp_path / "sae")
    weights = tmp_path / "sae" / "model.safetensors"
    save_file(load_file(str(weights)), str(weights))
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text()); cfg.pop("dtype")
    from scale_sae.cache import file_sha256
    cfg["weights_sha256"] = file_sha256(weights)
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps(cfg))
    assert torch.equal(BaseSAE.load(tmp_path / "sae").W_dec, sae.W_dec)


# ---- silent acceptance: reference state dicts and SAELens folders

def switch_reference(d=12, E=4, m=6):
    g = torch.Generator().manual_seed(3)
    return {"encoder.weight": torch.randn(E * m, d, generator=g), "router.weight": torch.randn(E, d, generator=g),
            "decoder": torch.randn(E * m, d, generator=g), "b_dec": torch.randn(d, generator=g),
            "b_router": torch.randn(d, generator=g)}


def scale_reference(d=12, E=4, m=6):
    g = torch.Generator().manual_seed(4)
    sd = {"gate.weight": torch.randn(E, d, generator=g), "gate.bias": torch.randn(E, generator=g),
          "b_gate": torch.randn(d, generator=g), "b_dec": torch.randn(d, generator=g), "omega": torch.rand(E, generator=g),
          "beta": torch.rand(E, generator=g), "lp_transform_encoder.weight": torch.eye(d),
          "lp_transform_decoder.weight": torch.eye(d)}
    for i in range(E):
        sd.update({f"expert_modules.{i}.encoder.weight": torch.randn(m, d, generator=g),
                   f"expert_modules.{i}.encoder.bias": torch.randn(m, generator=g),
                   f"expert_modules.{i}.decoder": torch.randn(m, d, generator=g)})
    return sd


@pytest.mark.parametrize("cls,make,change,words", [
    (SwitchSAE, switch_reference, dict(b_dec=torch.zeros(1)), r"b_dec is \(1,\), but the router and encoder make it \(12,\)"),
    (SwitchSAE, switch_reference, dict(decoder=torch.full((24, 12), float("nan"))), "decoder is not all finite"),
    (ScaleSAE, scale_reference, dict(b_dec=torch.zeros(1)), r"b_dec is \(1,\)"),
    (ScaleSAE, scale_reference, dict(omega=torch.tensor(0.3)), r"omega is \(\)"),
    (ScaleSAE, scale_reference, {"lp_transform_encoder.weight": torch.ones(1)}, r"lp_transform_encoder\.weight is \(1,\)"),
    (ScaleSAE, scale_reference, {"expert_modules.4.encoder.weight": torch.zeros(6, 12)}, r"entries this model does not have \(expert_modules\.4"),
    (ScaleSAE, scale_reference, dict(omega=torch.full((4,), float("nan"))), "omega is not all finite"),
], ids=["switch b_dec (1,)", "switch NaN", "scale b_dec (1,)", "scale scalar omega", "scale A (1,)", "scale fifth expert", "scale NaN"])
def test_reference_state_dict_is_checked(cls, make, change, words):
    with pytest.raises(ValueError, match=words): cls.from_reference_state_dict({**make(), **change}, k=3)


def lens_folder(tmp_path, sae=None):
    return to_saelens(sae if sae is not None else numbered_sae(0), tmp_path / "lens")


def edit_lens_cfg(folder, **changes):
    cfg = json.loads((folder / "cfg.json").read_text()); cfg.update(changes)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


def lens_without(folder, name):
    tensors = load_file(str(folder / "sae_weights.safetensors")); tensors.pop(name)
    save_file(tensors, str(folder / "sae_weights.safetensors"))
    return folder


def lens_nan(folder):
    tensors = load_file(str(folder / "sae_weights.safetensors")); tensors["W_dec"][0, 0] = float("nan")
    save_file(tensors, str(folder / "sae_weights.safetensors"))
    return folder


@pytest.mark.parametrize("damage,words", [
    (lambda f: lens_nan(f), r"sae_weights\.safetensors: NaN or infinite values in W_dec"),
    (lambda f: ((f / "cfg.json").write_text("{oops"), f)[1], r"cfg\.json is not valid JSON"),
    (lambda f: ((f / "sae_weights.safetensors").write_bytes((f / "sae_weights.safetensors").read_bytes()[:500]), f)[1],
     r"sae_weights\.safetensors cannot be read as safetensors"),
    (lambda f: lens_without(f, "b_enc"), r"sae_weights\.safetensors has no 'b_enc'"),
    (lambda f: edit_lens_cfg(f, d_sae=128), r"cfg\.json says d_in=16, d_sae=128, but W_dec in sae_weights\.safetensors is \(64, 16\)"),
    (lambda f: edit_lens_cfg(f, metadata=dict(scale_sae=dict(architecture="NoSuchSAE", cfg={}))),
     r"metadata\.scale_sae\.architecture is 'NoSuchSAE'"),
], ids=["NaN weights", "bad JSON", "truncated weights", "missing tensor", "edited d_sae", "unknown class"])
def test_saelens_folder_problems_name_file_and_key(tmp_path, damage, words):
    folder = damage(lens_folder(tmp_path))
    with pytest.raises(ValueError, match=words): from_saelens(folder)


def test_saelens_routed_folder_without_gate_is_named(tmp_path):
    torch.manual_seed(0)
    folder = edit_lens_cfg(lens_folder(tmp_path, SwitchSAE(16, 64, 4, 4)))
    cfg = json.loads((folder / "cfg.json").read_text()); cfg.pop("gate"); (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"cfg\.json has no 'gate'"): from_saelens(folder)


def test_base_load_of_a_saelens_folder_points_to_from_saelens(tmp_path):
    with pytest.raises(ValueError, match="is a SAELens folder.*from_saelens"): BaseSAE.load(lens_folder(tmp_path))


# ---- silent acceptance: training inputs

def test_one_tensor_as_batches_is_refused():
    with pytest.raises(TypeError, match=r"batches is one tensor \(512, 16\)"):
        train_sae(numbered_sae(0), torch.randn(512, 16), n_steps=4, progress=False)


def test_batches_that_run_out_are_reported():
    with pytest.warns(UserWarning, match="the batches ran out at step 3 of 10"):
        history = train_sae(numbered_sae(0), [torch.randn(32, 16) for _ in range(3)], n_steps=10, progress=False)
    assert history[-1]["step"] == 3


def test_decoding_a_latent_beyond_d_sae_names_the_range():
    with pytest.raises(IndexError, match=r"latent indices must lie in 0\.\.63 \(d_sae=64\), got 2\.\.64"):
        numbered_sae(0).decode(torch.ones(1, 2), torch.tensor([[2, 64]]))


# ---- the activation cache: untrusted manifests and shards, other builders, temporaries

class FakeModel(torch.nn.Linear):
    def __init__(self): super().__init__(1, 1)


@pytest.fixture
def fake_lm(monkeypatch):
    "Contexts of counting token ids and activations that are a fixed function of them: a cache with no language model."
    def contexts(texts, tokenizer, ctx_len):
        for i in range(10**6): yield torch.arange(i * ctx_len, (i + 1) * ctx_len) % 1000
    def residual_stream(model, ids, layer):
        return torch.stack([ids.float().sin(), ids.float().cos(), ids.float() / 1000, torch.ones_like(ids.float())], -1)
    monkeypatch.setattr(cache_mod, "token_contexts", contexts)
    monkeypatch.setattr(cache_mod, "residual_stream", residual_stream)
    def build(path, n_tokens=1024, **kw):
        return ActivationCache.build(path, FakeModel(), None, None, layer=0, n_tokens=n_tokens, ctx_len=16,
                                     shard_ctxs=16, progress=False, **kw)
    return build


def test_build_spares_files_it_did_not_make(tmp_path, fake_lm):
    path = tmp_path / "cache"; path.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"]); dead.wait()
    (path / ".notes.tmp").write_text("a user's")
    (path / f".shard-00000.acts.npy.tmp-{os.getpid()}-0123abcd").write_bytes(b"a live writer's")
    (path / f".shard-00001.acts.npy.tmp-{dead.pid}-0123abcd").write_bytes(b"a dead writer's")
    fake_lm(path)
    names = {p.name for p in path.iterdir()}
    assert ".notes.tmp" in names and f".shard-00000.acts.npy.tmp-{os.getpid()}-0123abcd" in names
    assert f".shard-00001.acts.npy.tmp-{dead.pid}-0123abcd" not in names


def test_second_builder_waits_for_the_first(tmp_path, fake_lm):
    path = tmp_path / "cache"; path.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1], 'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.readline()",
                               str(path / ".build.lock")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    done = []
    builder = threading.Thread(target=lambda: done.append(fake_lm(path)))
    builder.start(); builder.join(timeout=1)
    assert not done and not (path / "manifest.json").exists(), "the second builder must wait while the first holds the lock"
    holder.stdin.write("\n"); holder.stdin.flush(); holder.wait()
    builder.join(timeout=60)
    assert done and done[0].n_tokens >= 1024


def test_manifest_naming_a_file_outside_is_refused(tmp_path, fake_lm):
    fake_lm(tmp_path / "a"); fake_lm(tmp_path / "b", n_tokens=512)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    manifest["shards"][0]["acts"] = "../a/shard-00000.acts.npy"
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="which is not a shard file of this folder"): ActivationCache(tmp_path / "b")


def test_bit_flipped_shard_is_refused_on_read_and_rebuilt(tmp_path, fake_lm):
    good = fake_lm(tmp_path / "a")
    reference = good.rows(torch.arange(good.n_tokens))
    shard = tmp_path / "a" / "shard-00001.acts.npy"
    raw = bytearray(shard.read_bytes()); raw[-7] ^= 0x10; shard.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="shard-00001.acts.npy does not match its checksum"):
        ActivationCache(tmp_path / "a").rows(torch.arange(good.n_tokens))
    rebuilt = fake_lm(tmp_path / "a")
    assert torch.equal(rebuilt.rows(torch.arange(rebuilt.n_tokens)), reference)


@pytest.mark.parametrize("damage,words", [
    (lambda p: (p / "manifest.json").write_text("{not json"), r"manifest\.json is not valid JSON"),
    (lambda p: (p / "manifest.json").write_text('{"settings": {}}'), r"manifest\.json has no valid 'shards' entry"),
    (lambda p: (p / "manifest.json").write_text("[1, 2]"), r"does not hold a manifest"),
    (lambda p: (p / "shard-00000.acts.npy").write_bytes((p / "shard-00000.acts.npy").read_bytes()[:200]),
     r"shard-00000\.acts\.npy cannot be read"),
], ids=["invalid JSON", "incomplete manifest", "not an object", "truncated shard"])
def test_damaged_cache_files_are_named(tmp_path, fake_lm, damage, words):
    fake_lm(tmp_path / "a")
    damage(tmp_path / "a")
    with pytest.raises(ValueError, match=words): ActivationCache(tmp_path / "a")


def test_cache_of_zero_tokens_is_refused(tmp_path, fake_lm):
    with pytest.raises(ValueError, match="n_tokens=0 must be a whole number of at least 1"): fake_lm(tmp_path / "a", n_tokens=0)


# ---- unclear failures: the command line

@pytest.mark.parametrize("error", [RuntimeError("boom"), IndexError("index 99 is out of range"), AssertionError("no"),
                                   KeyError("arch"), pickle.UnpicklingError("bad")], ids=lambda e: type(e).__name__)
def test_every_error_ends_in_one_line(monkeypatch, error):
    import scale_sae.cli as cli_mod
    def fail(argv=None): raise error
    monkeypatch.setattr(cli_mod, "run_command", fail)
    status, err = cli([])
    assert status == 1 and err.count("\n") == 1 and err.startswith("scale-sae: error:") and "Traceback" not in err


def test_safetensors_error_ends_in_one_line(tmp_path, monkeypatch):
    no_data(monkeypatch)
    numbered_sae(0).save(tmp_path / "sae")
    (tmp_path / "sae" / "model.safetensors").write_bytes(b"\x00" * 100)
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text()); cfg.pop("weights_sha256")
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps(cfg))
    status, err = cli(["eval", str(tmp_path / "sae"), "--preset", "tiny"])
    assert status == 1 and "cannot be read as safetensors" in err and err.count("\n") == 1


def parsed(argv):
    args = build_parser().parse_args(argv)
    return config_from_args(args)[0]


def test_none_on_the_command_line_means_none():
    assert PRESETS["gpt2"].autocast == "bfloat16" and parsed(["train", "--arch", "topk", "--preset", "gpt2", "--autocast", "none"]).autocast is None
    assert PRESETS["smollm2"].max_norm_ratio == 10
    assert parsed(["train", "--arch", "topk", "--preset", "smollm2", "--max-norm-ratio", "none"]).max_norm_ratio is None
    status, err = cli(["train", "--arch", "topk", "--out-dir", "none"])
    assert status == 2 and "--out-dir" in err and "cannot be none" in err


def test_steps_in_scientific_notation():
    assert parsed(["train", "--arch", "topk", "--steps", "1e3"]).n_steps == 1000
    status, err = cli(["train", "--arch", "topk", "--steps", "1.5"])
    assert status == 2 and "expected a whole number, got '1.5'" in err


@pytest.mark.parametrize("argv,words", [
    (["train", "--arch", "topk", "--device", "meta"], "device='meta' holds no data"),
    (["train", "--arch", "topk", "--device", "cuda"], "torch sees no GPU here"),
    (["compare", "--arch", ","], "--arch needs at least one architecture"),
    (["bench", "--tokens", "-5"], "--tokens=-5 must be at least 1"),
    (["bench", "--device", "tpu9"], "--device tpu9"),
], ids=["device meta", "device cuda", "empty arch", "bench negative tokens", "bench unknown device"])
def test_cli_inputs_refused_in_one_line(tmp_path, monkeypatch, argv, words):
    if "cuda" in argv and torch.cuda.is_available(): pytest.skip("this machine has a GPU")
    no_data(monkeypatch)
    status, err = cli(argv + (["--out", str(tmp_path)] if argv[0] != "bench" else []))
    assert status == 1 and words in err and "Traceback" not in err, err


def test_layer_beyond_the_model_is_refused(tmp_path, monkeypatch):
    cfg = PRESETS["tiny"].replace(layer=99, device="cpu", out_dir=str(tmp_path))
    def corpus_reached(cfg): raise AssertionError("the corpus was read before the layer was checked")
    monkeypatch.setattr(runs, "load_run_corpus", corpus_reached)
    with pytest.raises(ValueError, match=r"layer=99, but the model 'tiny_lm' has \d+ blocks: pass --layer 0 \.\. \d+"):
        runs.prepare_data(cfg, progress=False)


def test_eval_docs_beyond_the_corpus_is_refused(tmp_path):
    (tmp_path / "corpus.txt").write_text("\n\n".join(f"Paragraph {i} about sparse autoencoders." for i in range(20)))
    cfg = PRESETS["tiny"].replace(corpus=str(tmp_path / "corpus.txt"), eval_docs=50, device="cpu")
    with pytest.raises(ValueError, match=r"eval_docs=50 holds out all \d+ documents"): runs.load_run_corpus(cfg)


def test_weights_that_cannot_fit_are_refused_before_building(tmp_path, monkeypatch):
    cfg = TINY.replace(out_dir=str(tmp_path), d_sae=2**36, k=8)
    monkeypatch.setattr(runs, "build_sae", runs.build_sae)  # the real one, on the meta device only
    with pytest.raises(ValueError, match=r"needs about \d+\.\d GiB for its weights, gradients and Adam state"):
        train_run(cfg, "topk", data=synthetic_data(cfg.replace(d_sae=256), d_in=16, n_features=256, n_eval=64), progress=False)
    assert not (tmp_path / "topk").exists()


@pytest.mark.parametrize("content,words", [("[1, 2]", "is not a lock this package wrote"),
                                           ('{"pid": "abc", "host": "x"}', "is not a lock this package wrote")])
def test_odd_lock_file_is_named(tmp_path, content, words):
    (tmp_path / ".lock").write_text(content)
    with pytest.raises(ValueError, match=words):
        with runs.run_lock(tmp_path / ".lock"): pass
    assert (tmp_path / ".lock").read_text() == content


def test_eval_reads_a_saelens_export(tmp_path, monkeypatch):
    folder = lens_folder(tmp_path)
    seen = {}
    def fake_prepare(cfg, progress=True):
        seen["prepared"] = True
        return synthetic_data(cfg, d_in=16, n_features=256, n_eval=64)
    monkeypatch.setattr(runs, "prepare_data", fake_prepare)
    import scale_sae.evaluate as ev
    monkeypatch.setattr(ev, "evaluate", lambda sae, x, **kw: dict(mse=float((sae(x) - x).pow(2).sum(-1).mean())))
    status, err = cli(["eval", str(folder), "--preset", "tiny", "--device", "cpu"])
    assert status == 0 and seen, err


# ---- non-finite activations: refused in inference and evaluation, stopped or counted in training

def test_nonfinite_activations_are_refused_in_inference_and_evaluation():
    from scale_sae.evaluate import evaluate
    sae, x = numbered_sae(0), torch.randn(64, 16)
    x[5, 3], x[9, 0] = float("nan"), float("inf")
    with pytest.raises(ValueError, match="2 of 64 tokens hold NaN or infinite activations \\(the first at token 5\\)"): sae(x)
    with pytest.raises(ValueError, match="tokens hold NaN or infinite activations"): evaluate(sae, x)
    assert torch.isfinite(sae(x[torch.isfinite(x).all(-1)])).all()  # the fix the message gives works
