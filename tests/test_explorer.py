"""The explorer's statistics: top contexts equal a brute-force pass, chunking changes nothing, promoted tokens equal
the model's own final norm and unembedding, and a stream of over 100k tokens runs in bounded memory with a progress bar."""
import weakref

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from scale_sae.explorer import Contexts, Explorer, feature_stats, final_norm, promoted_tokens, unembed
from scale_sae.core import ScaleSAE
from scale_sae.moe import MultiExpertSAE
from scale_sae.sae import TopKSAE
from scale_sae.switch import SwitchSAE

D, T = 16, 32

def make_saes():
    torch.manual_seed(0)
    return [TopKSAE(D, 64, 4), SwitchSAE(D, 64, 4, 4), MultiExpertSAE(D, 64, 4, 4, e=2), ScaleSAE(D, 64, 4, 4, e=2)]

def synthetic(n_ctx, integer=False, alive=None):
    """Contexts of random activations made on the fly, one seed per context, nothing kept. `integer`: small whole
    numbers (with an integer SAE, many exactly equal activations). `alive` collects weak references to the chunks."""
    def make_chunks(chunk_tokens):
        per = max(1, chunk_tokens // T)
        for start in range(0, n_ctx, per):
            ctxs = range(start, min(start + per, n_ctx))
            gens = [torch.Generator().manual_seed(c) for c in ctxs]
            acts = torch.cat([torch.randint(-2, 3, (T, D), generator=g).float() if integer else
                              torch.randn(T, D, generator=g) for g in gens])
            if alive is not None: alive.append(weakref.ref(acts))
            yield acts, torch.arange(start * T, (start + len(ctxs)) * T)
    return Contexts(torch.zeros(n_ctx, T, dtype=torch.long), make_chunks, n_ctx * T, f"synthetic-{n_ctx}-{integer}")

def brute_force(sae, contexts, top_k):
    "Per feature, its `top_k` (activation, where), strongest first and earlier token first among equals, in plain Python."
    x, where = map(torch.cat, zip(*contexts.chunks(10**9)))
    with torch.no_grad(): acts, idx = sae.encode(x)
    firings = [[] for _ in range(sae.d_sae)]
    for w, row_acts, row_idx in zip(where.tolist(), acts.tolist(), idx.tolist()):
        for a, f in zip(row_acts, row_idx):
            if a > 0: firings[f].append((-a, w))
    return [sorted(fs)[:top_k] for fs in firings], firings

def as_lists(stats, top_k):
    return [[(-a, w) for a, w in zip(acts, wheres) if w >= 0]
            for acts, wheres in zip(stats.top_acts.tolist(), stats.top_where.tolist())]

@pytest.mark.parametrize("sae", make_saes(), ids=lambda s: type(s).__name__)
def test_top_contexts_equal_brute_force(sae):
    contexts = synthetic(40)
    stats = feature_stats(sae, contexts, top_k=5, chunk_tokens=3 * T, progress=False)
    best, firings = brute_force(sae, contexts, 5)
    got = as_lists(stats, 5)
    for f in range(sae.d_sae):
        assert [w for _, w in got[f]] == [w for _, w in best[f]], f"feature {f}"
        torch.testing.assert_close(torch.tensor([a for a, _ in got[f]]), torch.tensor([a for a, _ in best[f]]))
    assert stats.counts.tolist() == [len(fs) for fs in firings]

def test_ties_keep_the_earlier_token():
    sae = TopKSAE(D, 64, 4)
    with torch.no_grad():  # integer weights on integer inputs: exact, and full of equal activations
        sae.W_enc.copy_(torch.randint(-1, 2, sae.W_enc.shape, generator=torch.Generator().manual_seed(1)))
    contexts = synthetic(30, integer=True)
    stats = feature_stats(sae, contexts, top_k=6, chunk_tokens=T, progress=False)
    best, firings = brute_force(sae, contexts, 6)
    assert any(len({a for a, _ in fs}) < len(fs) for fs in firings)  # there are ties to break
    assert as_lists(stats, 6) == best

@pytest.mark.parametrize("sae", make_saes(), ids=lambda s: type(s).__name__)
def test_chunks_equal_all_at_once(sae):
    contexts = synthetic(50)
    once = feature_stats(sae, contexts, top_k=8, chunk_tokens=10**9, progress=False)
    for chunk in (1, 7 * T):
        chunked = feature_stats(sae, contexts, top_k=8, chunk_tokens=chunk, progress=False)
        for name in ("counts", "hist", "top_where", "expert_counts"):
            assert torch.equal(getattr(chunked, name), getattr(once, name)), name
        torch.testing.assert_close(chunked.top_acts, once.top_acts)
        torch.testing.assert_close(chunked.act_sum, once.act_sum)
        assert chunked.n_tokens == once.n_tokens == 50 * T
    # every token goes to e experts
    assert once.expert_counts.sum() == 50 * T * getattr(sae, "e", 1) * (getattr(sae, "n_experts", 1) > 1)

def test_streaming_over_100k_tokens_in_bounded_memory(capsys):
    sae = SwitchSAE(D, 64, 4, 4)
    alive = []
    n_ctx = 4_000  # 128,000 tokens
    stats = feature_stats(sae, synthetic(n_ctx, alive=alive), top_k=8, chunk_tokens=4096, progress=True)
    assert stats.n_tokens == n_ctx * T
    # the chunks were not kept: at most the last one is still referenced
    assert len(alive) == n_ctx * T // 4096 + (n_ctx * T % 4096 > 0)
    assert sum(r() is not None for r in alive) <= 1
    # the state is the same size after 1k tokens as after 128k
    small = feature_stats(sae, synthetic(32), top_k=8, progress=False)
    sizes = [{n: t.numel() for n, t in s.state_dict().items()} for s in (stats, small)]
    assert sizes[0] == sizes[1]
    err = capsys.readouterr().err
    assert "feature statistics" in err and "100%" in err and "128k/128k" in err

def test_stats_are_read_back_from_disk(tmp_path):
    sae = make_saes()[3]
    first = feature_stats(sae, synthetic(10), cache_dir=tmp_path, progress=False)
    def no_data(chunk_tokens): raise AssertionError("statistics recomputed although they are on disk")
    again = feature_stats(sae, Contexts(torch.zeros(10, T, dtype=torch.long), no_data, 10 * T, "synthetic-10-False"),
                          cache_dir=tmp_path, progress=False)
    for n, t in first.state_dict().items(): assert torch.equal(t, again.state_dict()[n]), n
    with torch.no_grad(): sae.W_dec.mul_(-1)  # other weights: another file
    with pytest.raises(AssertionError, match="recomputed"):
        feature_stats(sae, Contexts(torch.zeros(10, T, dtype=torch.long), no_data, 10 * T, "synthetic-10-False"),
                      cache_dir=tmp_path, progress=False)

def tiny_gpt2():
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=64, n_embd=D, n_layer=2, n_head=2)).eval()
    with torch.no_grad():  # a gain and bias far from 1 and 0, so that leaving either out would show
        model.transformer.ln_f.weight.uniform_(-2, 2); model.transformer.ln_f.bias.normal_()
    return model

def tiny_llama():
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=D, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)).eval()
    with torch.no_grad(): model.model.norm.weight.uniform_(-2, 2)
    return model

@pytest.mark.parametrize("make_model", [tiny_gpt2, tiny_llama], ids=["LayerNorm", "RMSNorm"])
def test_promoted_tokens_equal_direct_computation(make_model):
    model = make_model()
    norm, head = final_norm(model), model.get_output_embeddings()
    directions = torch.randn(5, D, generator=torch.Generator().manual_seed(2))
    with torch.no_grad(): direct = head(norm(directions)) - head(norm(torch.zeros(1, D)))
    ours = unembed(model, directions)
    scale = (ours * direct).sum(1, keepdim=True) / direct.pow(2).sum(1, keepdim=True)
    assert (scale > 0).all()
    torch.testing.assert_close(ours, scale * direct, rtol=1e-4, atol=1e-5)
    for d, row in zip(directions, direct):
        got = promoted_tokens(model, d, 7)
        assert got["promoted"].tolist() == row.topk(7).indices.tolist()
        assert got["suppressed"].tolist() == (-row).topk(7).indices.tolist()

class CharTokenizer:
    "Enough of a tokenizer for the views: a letter per token id."
    def decode(self, ids): return "".join(chr(97 + i % 26) for i in ids)
    def __call__(self, text, return_tensors=None): return {"input_ids": torch.tensor([[ord(c) % 100 for c in text]])}

@pytest.mark.parametrize("sae", make_saes(), ids=lambda s: type(s).__name__)
def test_views_on_a_small_model(sae):
    model = tiny_llama()
    tokens = torch.randint(0, 100, (6, 20), generator=torch.Generator().manual_seed(3))
    ex = Explorer(sae, model, CharTokenizer(), 0, Contexts.from_model(model, tokens, 0, skip_first=1), skip_first=1,
                  name="t", progress=False)
    f = int(ex.stats.counts.argmax())
    page = ex.features_html([f])
    for g, _ in ex.nearest(f):
        assert f'id="t-f{g}"' in page and f'href="#t-f{g}"' in page
        if ex.n_experts > 1: assert ex.expert_of(g) != ex.expert_of(f)
    r = ex.routing("hello world")
    assert not r["encoded"][0] and r["encoded"][1:].all()
    if ex.n_experts > 1:
        assert ex.expert_html(0).count("<tr>") > 1
        owner = r["top_indices"] // ex.m
        assert ((owner[..., None] == r["experts"][:, None, :]).any(-1) | (r["top_acts"] <= 0)).all()
    else:
        with pytest.raises(ValueError, match="no experts"): ex.expert_html(0)
    with pytest.raises(ValueError, match="does not exist"): ex.feature_html(sae.d_sae)
    panel = ex.widget(feature=f)
    nearest = ex.nearest(f)[0][0]
    panel.controls["jumps"].children[1].click()
    assert panel.controls["feature"].value == nearest

def test_wrong_sae_for_the_model_is_refused_before_any_work():
    def no_data(chunk_tokens): raise AssertionError("statistics computed for an SAE that does not fit")
    with pytest.raises(ValueError, match="d_in=8"):
        Explorer(TopKSAE(8, 32, 4), tiny_llama(), CharTokenizer(), 0,
                 Contexts(torch.zeros(1, T, dtype=torch.long), no_data, T, "x"))
