"Bad inputs and architecture coverage for scale_sae.activations (the narrative checks live in nbs/00_activations.ipynb)."
import json

import pytest
import torch
from torch import nn

from scale_sae.corpora import load_corpus, python_docs_corpus, sized
from scale_sae.lm import load_lm
from scale_sae.hooks import find_blocks, patch_residual, residual_stream
from scale_sae.buffer import ActivationBuffer, activation_stats, token_contexts
from scale_sae.synthetic import SyntheticData

transformers = pytest.importorskip("transformers")


# --- a tiny tokenizer and random models built from configs (no download) ---------------------------------------------

@pytest.fixture(scope="module")
def corpus():
    return python_docs_corpus()


@pytest.fixture(scope="module")
def tokenizer(corpus):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus["text"][:500], trainer=trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return transformers.GPT2TokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                          unk_token="<|endoftext|>", pad_token="<|endoftext|>")


def _gpt2(n_layer=3, n_positions=64):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=400, n_positions=n_positions, n_embd=32, n_layer=n_layer, n_head=2,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def _neox():
    torch.manual_seed(0)
    cfg = transformers.GPTNeoXConfig(vocab_size=400, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64)
    return transformers.GPTNeoXForCausalLM(cfg).eval()


def _llama():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=400, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                   num_key_value_heads=1, intermediate_size=64, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(cfg).eval()


def _gemma():
    if not hasattr(transformers, "GemmaConfig"): pytest.skip("no Gemma in this transformers")
    torch.manual_seed(0)
    cfg = transformers.GemmaConfig(vocab_size=400, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                   num_key_value_heads=1, head_dim=16, intermediate_size=64, max_position_embeddings=64)
    return transformers.GemmaForCausalLM(cfg).eval()


ARCHS = {"gpt2": _gpt2, "neox": _neox, "llama": _llama, "gemma": _gemma}


@pytest.mark.parametrize("arch", list(ARCHS))
def test_residual_stream_matches_hidden_states(arch):
    model = ARCHS[arch]()
    ids = torch.randint(1, 400, (2, 10))
    with torch.no_grad(): ref = model(ids, output_hidden_states=True).hidden_states
    blocks = find_blocks(model)
    assert len(blocks) == 3
    for layer in range(len(blocks) - 1):  # the last entry may have the final norm applied
        torch.testing.assert_close(residual_stream(model, ids, layer), ref[layer + 1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_patch_residual_changes_downstream_only(arch):
    model = ARCHS[arch]()
    ids = torch.randint(1, 400, (2, 10))
    n_hooks = [len(b._forward_hooks) for b in find_blocks(model)]  # transformers may keep hooks of its own
    with torch.no_grad():
        base = model(ids).logits
        with patch_residual(model, 1, lambda h: h * 0): zeroed = model(ids).logits
        with patch_residual(model, 1, lambda h: h): same = model(ids).logits
        # patching block 1 must not change what block 0 outputs, and must change block 2's output
        with patch_residual(model, 1, lambda h: h + 1.0):
            h0 = residual_stream(model, ids, 0)
            h2 = residual_stream(model, ids, 2)
    torch.testing.assert_close(same, base)
    assert (zeroed - base).abs().max() > 1e-3
    torch.testing.assert_close(h0, residual_stream(model, ids, 0))
    assert (h2 - residual_stream(model, ids, 2)).abs().max() > 1e-3
    assert [len(b._forward_hooks) for b in find_blocks(model)] == n_hooks


def test_residual_stream_stops_after_layer():
    model = _gpt2()
    ran = []
    hooks = [b.register_forward_hook(lambda m, a, o, i=i: ran.append(i)) for i, b in enumerate(find_blocks(model))]
    residual_stream(model, torch.randint(1, 400, (1, 5)), 0)
    for h in hooks: h.remove()
    assert ran == [0]


def test_patch_residual_handles_tuple_outputs():
    class TupleBlock(nn.Module):
        def __init__(self): super().__init__(); self.lin = nn.Linear(4, 4)
        def forward(self, x): return (self.lin(x), "extra")
    class Net(nn.Module):
        def __init__(self): super().__init__(); self.layers = nn.ModuleList(TupleBlock() for _ in range(3))
        def forward(self, x, **kw):
            for b in self.layers: x = b(x)[0]
            return x
    net, x = Net(), torch.randn(2, 3, 4)
    torch.testing.assert_close(residual_stream(net, x, 1), net.layers[1].lin(net.layers[0].lin(x)))
    with patch_residual(net, 2, lambda h: torch.zeros_like(h)):
        assert net(x).abs().max() == 0


def test_layer_out_of_range():
    model = _gpt2()
    ids = torch.randint(1, 400, (1, 5))
    with pytest.raises(IndexError, match=r"valid layers are 0\.\.2"): residual_stream(model, ids, 3)
    with pytest.raises(IndexError, match="valid layers"):
        with patch_residual(model, 7, lambda h: h): pass


def test_find_blocks_generic_and_error():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.small = nn.ModuleList([nn.Linear(2, 2)])
            self.stack = nn.ModuleList([nn.Linear(2, 2) for _ in range(5)])
            self.mixed = nn.ModuleList([nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2), nn.ReLU(), nn.Tanh(), nn.ReLU()])
    odd = Odd()
    assert find_blocks(odd) is odd.stack
    with pytest.raises(ValueError, match="nn.ModuleList"): find_blocks(nn.Sequential(nn.Linear(2, 2)))


# --- corpora ---------------------------------------------------------------------------------------------------------

def test_load_corpus_missing_path_names_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="Fix the path"): load_corpus(str(tmp_path / "nope.jsonl"))
    with pytest.raises(FileNotFoundError, match="Fix the path"): load_corpus("./no/such/dir")


def test_load_corpus_local_formats(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"text": "one"}, {"text": "two"}]))
    assert load_corpus(tmp_path / "a.json")["text"] == ["one", "two"]
    import datasets
    datasets.Dataset.from_dict({"content": ["x", "y", "z"]}).to_parquet(str(tmp_path / "p.parquet"))
    assert load_corpus(tmp_path / "p.parquet", text_column="content")["text"] == ["x", "y", "z"]
    with pytest.raises(KeyError, match="text_column"): load_corpus(tmp_path / "p.parquet")
    folder = tmp_path / "txts"; folder.mkdir()
    (folder / "1.txt").write_text("alpha\nbeta"); (folder / "2.txt").write_text("gamma")
    assert load_corpus(folder)["text"] == ["alpha", "beta", "gamma"]
    streamed = load_corpus(folder, streaming=True)
    assert [r["text"] for r in streamed] == ["alpha", "beta", "gamma"]
    empty = tmp_path / "empty"; empty.mkdir()
    with pytest.raises(FileNotFoundError): load_corpus(empty)


def test_load_lm_missing_dir():
    with pytest.raises(FileNotFoundError, match="Fix the path"): load_lm("./no/such/model")


def test_load_lm_roundtrip(tmp_path, tokenizer):
    model = _gpt2()
    model.save_pretrained(tmp_path); tokenizer.save_pretrained(tmp_path)
    loaded, tok = load_lm(tmp_path)
    assert not loaded.training and tok.pad_token is not None
    ids = torch.randint(1, 400, (1, 6))
    with torch.no_grad(): torch.testing.assert_close(loaded(ids).logits, model(ids).logits)


# --- token contexts and the buffer -----------------------------------------------------------------------------------

def test_token_contexts_streams_lazily(tokenizer, corpus):
    read = []
    def texts():
        for i, t in enumerate(corpus["text"]):
            read.append(i); yield t
    it = token_contexts(texts(), tokenizer, 32, docs_per_call=8)
    next(it)
    assert len(read) <= 16  # the whole corpus is not tokenized up front


def test_token_contexts_bad_ctx_len(tokenizer):
    with pytest.raises(ValueError): next(token_contexts(["a b c"], tokenizer, 0))


def test_buffer_bad_inputs(tokenizer, corpus):
    model = _gpt2(n_positions=64)
    with pytest.raises(ValueError, match="n_positions"): ActivationBuffer(model, tokenizer, corpus, layer=1, ctx_len=128)
    with pytest.raises(ValueError, match="empty corpus"): ActivationBuffer(model, tokenizer, [], layer=1, ctx_len=16)
    with pytest.raises(ValueError, match="empty corpus"): ActivationBuffer(model, tokenizer, [""], layer=1, ctx_len=16)
    with pytest.raises(ValueError, match="empty corpus"): ActivationBuffer(model, tokenizer, iter([]), layer=1, ctx_len=16)
    with pytest.raises(IndexError): ActivationBuffer(model, tokenizer, corpus, layer=3, ctx_len=16)
    with pytest.raises(ValueError, match="batch_size"):
        ActivationBuffer(model, tokenizer, corpus, layer=1, ctx_len=16, n_ctxs=4, batch_size=65)


def test_buffer_cycles_and_stays_bounded(tokenizer, corpus):
    model = _gpt2()
    texts = corpus["text"][:40]
    n_ctx_total = len(list(token_contexts(texts, tokenizer, 16)))
    buf = ActivationBuffer(model, tokenizer, texts, layer=1, ctx_len=16, n_ctxs=8, batch_size=32, progress=False)
    pool_shape = buf.acts.shape
    for _ in range(3 * n_ctx_total * 16 // 32 + 5):
        x = next(buf)
        assert x.shape == (32, 32) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert buf.acts.shape == pool_shape == (8 * 16, 32)
    assert buf.epoch >= 2 and buf.n_contexts_read > n_ctx_total


def test_buffer_rows_used_at_most_once_per_fill(tokenizer, corpus):
    model = _gpt2()
    buf = ActivationBuffer(model, tokenizer, corpus["text"][:200], layer=0, ctx_len=16, n_ctxs=16, batch_size=32, progress=False)
    for _ in range(4):  # 4 * 32 = 128 = half the pool: no refill yet, and every batch takes 32 rows never taken before
        next(buf)
    assert int((~buf.unread).sum()) == 128
    next(buf)  # exactly half left: no refill yet
    assert int((~buf.unread).sum()) == 160
    next(buf)  # below half: refilled before drawing, so only this batch's rows are marked used
    assert int((~buf.unread).sum()) == 32 and buf.n_contexts_read == 16 + 10


def test_buffer_one_shot_iterator_ends(tokenizer, corpus):
    model = _gpt2()
    buf = ActivationBuffer(model, tokenizer, iter(corpus["text"][:30]), layer=0, ctx_len=16, n_ctxs=4, batch_size=16, progress=False)
    n = sum(1 for _ in buf)
    assert n > 0


def test_activation_stats_against_direct():
    torch.manual_seed(0)
    rows = [torch.randn(100, 5) * 2 + 3 for _ in range(4)]
    s = activation_stats(iter(rows), 4)
    x = torch.cat(rows)
    assert s["n_rows"] == 400 and s["d"] == 5
    assert abs(s["mean_norm"] - x.norm(dim=1).mean().item()) < 1e-4
    torch.testing.assert_close(s["mean"], x.mean(0))


# --- synthetic data --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n_clusters,zipf", [(1, 1.0), (4, 0.5), (16, 1.2)])
def test_synthetic_frequencies(n_clusters, zipf):
    data = SyntheticData(d_in=32, n_features=512, n_clusters=n_clusters, avg_l0=12, zipf_exponent=zipf, seed=1)
    assert abs(data.freqs.sum().item() - 12) < 1e-3
    assert (data.freqs <= 1).all() and (data.freqs > 0).all()
    _, codes = data.sample(40_000, return_codes=True)
    fired = (codes > 0).float()
    emp = fired.mean(0)
    assert torch.corrcoef(torch.stack([emp, data.freqs]))[0, 1] > 0.95
    assert abs(fired.sum(1).mean().item() - 12) / 12 < 0.05
    # frequent features: per-feature relative error small where counts are large
    big = data.freqs > 0.05
    assert ((emp[big] - data.freqs[big]).abs() / data.freqs[big]).max() < 0.1


def test_synthetic_clipping_keeps_freqs_exact():
    # a very skewed spectrum with a high L0 forces probabilities to clip at 1
    data = SyntheticData(d_in=16, n_features=64, n_clusters=4, avg_l0=20, zipf_exponent=2.0, seed=0)
    assert data.p_in.max() == 1.0
    _, codes = data.sample(30_000, return_codes=True)
    emp = (codes > 0).float().mean(0)
    assert (emp - data.freqs).abs().max() < 0.02
    assert abs(data.freqs.sum().item() - 20) < 1e-3


def test_synthetic_reconstruction_and_determinism():
    data = SyntheticData(d_in=16, n_features=128, n_dense=3, n_clusters=4, avg_l0=5, seed=3)
    x, codes = data.sample(100, generator=torch.Generator().manual_seed(0), return_codes=True)
    x2 = data.sample(100, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, x2)
    dense_part = x - codes @ data.features
    # what remains lies in the span of the dense directions
    coef = torch.linalg.lstsq(data.dense.T, dense_part.T).solution
    torch.testing.assert_close(coef.T @ data.dense, dense_part, atol=1e-4, rtol=1e-4)
    assert data.dense.shape == (3, 16) and data.features.shape == (128, 16)
    b = data.batches(64, seed=5)
    first = next(b)
    torch.testing.assert_close(first, next(data.batches(64, seed=5)))
    assert not torch.equal(first, next(b))


def test_synthetic_dense_directions_are_common():
    data = SyntheticData(d_in=16, n_features=128, n_dense=2, n_clusters=4, avg_l0=5, dense_prob=0.9, seed=0)
    x, codes = data.sample(20_000, return_codes=True)
    coef = (x - codes @ data.features) @ torch.linalg.pinv(data.dense)
    present = (coef.abs() > 1e-3).float().mean(0)
    torch.testing.assert_close(present, torch.full((2,), 0.9), atol=0.02, rtol=0)


def test_synthetic_bad_inputs():
    with pytest.raises(ValueError): SyntheticData(d_in=8, n_features=10, avg_l0=20)
    with pytest.raises(ValueError): SyntheticData(d_in=8, n_features=10, n_clusters=0, avg_l0=2)
    with pytest.raises(ValueError): SyntheticData(d_in=8, n_features=10, n_clusters=2, avg_l0=2, cluster_cos=1.0)


def test_sized():
    assert sized(5, 1) in (5, 1)
