"The activation cache survives kill -9: a restarted build keeps the finished shards and ends identical to an uninterrupted one."
import json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path

import pytest
import torch

from scale_sae.cache import ActivationCache

BUILD = textwrap.dedent("""
    import sys, time
    import scale_sae.cache as cache_mod
    from scale_sae.lm import tiny_lm
    from scale_sae.corpora import python_docs_corpus
    slow = len(sys.argv) > 2
    if slow:  # a slow model, so that the kill lands part-way through
        fast = cache_mod.residual_stream
        def residual_stream(*a, **kw):
            time.sleep(0.05); return fast(*a, **kw)
        cache_mod.residual_stream = residual_stream
    model, tok = tiny_lm()
    docs = python_docs_corpus()["text"][:800]
    cache_mod.ActivationCache.build(sys.argv[1], model, tok, docs, layer=2, n_tokens=16_000, ctx_len=64, skip_first=1,
                                    shard_ctxs=16, model_batch_size=4, describe=dict(model="tiny_lm"), progress=False)
""")

def build(path, slow=False):
    return subprocess.Popen([sys.executable, "-c", BUILD, str(path), *(["slow"] if slow else [])])

def shards_done(path):
    try: return len(json.loads((path / "manifest.json").read_text())["shards"])
    except (FileNotFoundError, json.JSONDecodeError): return 0

def test_kill_and_resume_is_identical(tmp_path):
    whole = tmp_path / "whole"
    assert build(whole).wait(timeout=600) == 0
    reference = ActivationCache(whole)
    assert len(reference.shards) >= 8

    killed = tmp_path / "killed"
    proc = build(killed, slow=True)
    deadline = time.time() + 600
    while shards_done(killed) < 3 and time.time() < deadline and proc.poll() is None: time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL); proc.wait()
    n_before = shards_done(killed)
    assert 3 <= n_before < len(reference.shards), "the kill must land part-way through the build"
    with pytest.raises(ValueError, match="incomplete"): ActivationCache(killed)
    kept = {p.name: p.stat().st_mtime_ns for p in killed.glob("shard-*.npy")
            if int(p.name.split("-")[1].split(".")[0]) < n_before}

    assert build(killed).wait(timeout=600) == 0
    resumed = ActivationCache(killed)
    assert {n: (killed / n).stat().st_mtime_ns for n in kept} == kept        # finished shards were not recomputed
    assert [s["acts_sha256"] for s in resumed.shards] == [s["acts_sha256"] for s in reference.shards]
    assert [s["tokens_sha256"] for s in resumed.shards] == [s["tokens_sha256"] for s in reference.shards]
    assert not list(killed.glob(".*tmp*"))  # what a killed write left behind is cleaned up
    assert torch.equal(resumed.rows(torch.arange(resumed.n_tokens)), reference.rows(torch.arange(reference.n_tokens)))
    assert resumed.verify()

def test_other_settings_are_refused_before_work(tmp_path):
    path = tmp_path / "c"
    assert build(path).wait(timeout=600) == 0
    with pytest.raises(ValueError, match="other settings"):
        ActivationCache(path, expect=dict(model="smollm2"))
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        ActivationCache(tmp_path / "nothing-here")
