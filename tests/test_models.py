"""Property tests and bad inputs for the SAE models, beyond the notebooks' worked examples."""
import subprocess, sys

import pytest
import torch
from hypothesis import given, settings, strategies as st

from scale_sae.sae import BaseSAE, TopKSAE
from scale_sae.switch import SwitchSAE, check_dispatch_agrees
from scale_sae.moe import MultiExpertSAE
from scale_sae.core import ScaleSAE


@settings(max_examples=25, deadline=None)
@given(n_experts=st.sampled_from([1, 2, 4, 8]), m=st.integers(2, 12), e_frac=st.floats(0, 1),
       k_frac=st.floats(0.01, 1), n_tokens=st.integers(1, 40), gate=st.sampled_from(['softmax', 'renorm', 'hard', 'prob']),
       seed=st.integers(0, 10_000))
def test_dispatch_modes_agree_and_stay_in_active_experts(n_experts, m, e_frac, k_frac, n_tokens, gate, seed):
    e = 1 + int(e_frac * (n_experts - 1))
    k = max(1, int(k_frac * e * m))
    torch.manual_seed(seed)
    sae = ScaleSAE(6, n_experts * m, k, n_experts, e=e, gate=gate).double()
    with torch.no_grad(): sae.omega.uniform_(-0.5, 1.0); sae.b_enc.normal_()
    x = torch.randn(n_tokens, 6, dtype=torch.float64)
    check_dispatch_agrees(sae, x, modes=('sparse', 'dense', 'padded', 'auto'), atol=1e-8)
    top_acts, top_indices = sae.encode(x)
    experts, _, _ = sae.route(x)
    assert top_acts.shape == top_indices.shape == (n_tokens, k)
    assert (top_acts >= 0).all()
    # every selected latent belongs to one of the token's active experts
    assert (top_indices[:, :, None] // sae.m == experts[:, None, :]).any(-1).all()


def test_uneven_routing_leaves_empty_experts():
    "Sparse dispatch must cope with experts that receive no token at all."
    torch.manual_seed(0)
    sae = MultiExpertSAE(8, 64, 4, n_experts=8, e=2).double()
    with torch.no_grad(): sae.b_router.copy_(torch.tensor([50., 49., 0, 0, 0, 0, 0, 0], dtype=torch.float64))
    x = torch.randn(32, 8, dtype=torch.float64)
    experts, _, _ = sae.route(x)
    assert set(experts.unique().tolist()) == {0, 1}
    check_dispatch_agrees(sae, x, modes=('sparse', 'dense', 'padded', 'auto'), atol=1e-8)


@pytest.mark.parametrize('make, message', [
    (lambda: TopKSAE(8, 16, 0), 'between 1 and d_sae'),
    (lambda: TopKSAE(8, 16, 17), 'between 1 and d_sae'),
    (lambda: SwitchSAE(8, 30, 4, n_experts=4), 'divisible'),
    (lambda: MultiExpertSAE(8, 32, 4, n_experts=4, e=5), 'active experts'),
    (lambda: MultiExpertSAE(8, 32, 20, n_experts=4, e=2), 'exceeds'),
    (lambda: ScaleSAE(8, 32, 4, n_experts=4, gate='sigmoid'), 'unknown gate'),
    (lambda: ScaleSAE(8, 32, 4, n_experts=4, dispatch='magic'), 'unknown dispatch'),
])
def test_bad_configurations_fail_with_a_fix(make, message):
    with pytest.raises(ValueError, match=message): make()


def test_wrong_input_width_is_named():
    with pytest.raises(ValueError, match='last dim 8'): TopKSAE(8, 16, 2).encode(torch.randn(3, 7))


@pytest.mark.parametrize('make', [lambda: TopKSAE(8, 32, 3), lambda: SwitchSAE(8, 32, 3, 4),
                                  lambda: MultiExpertSAE(8, 32, 3, 4, e=2, gate='renorm'),
                                  lambda: ScaleSAE(8, 32, 3, 4, e=3, freeze_A=True),
                                  lambda: SwitchSAE(8, 32, 3, 4, enc_bias=False, router_bias=False),
                                  lambda: ScaleSAE(8, 32, 3, 4, router_bias=False)])
def test_save_load_roundtrip_every_architecture(make, tmp_path):
    torch.manual_seed(0)
    sae = make()
    with torch.no_grad():
        for p in sae.parameters(): p.add_(0.1 * torch.randn_like(p))
    sae.save(tmp_path)
    x = torch.randn(20, 8)
    for loader in (type(sae).load, BaseSAE.load):
        back = loader(tmp_path)
        assert type(back) is type(sae) and back.cfg == sae.cfg
        assert torch.equal(back(x), sae(x))
        assert [p.requires_grad for p in back.parameters()] == [p.requires_grad for p in sae.parameters()]


def test_loading_another_architecture_is_refused(tmp_path):
    ScaleSAE(8, 32, 3, 4).save(tmp_path)
    with pytest.raises(ValueError, match='ScaleSAE.load'): SwitchSAE.load(tmp_path)


def test_autocast_bf16_forward_runs():
    "bf16 autocast, as the gpt2 preset uses on CUDA, must not break the embedding-bag decoder on CPU either."
    sae = ScaleSAE(16, 64, 4, 8, e=2)
    x = torch.randn(10, 16)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = sae.loss(x)
    assert torch.isfinite(out['loss'])


def test_switch_module_owns_every_gate_and_dispatch_mode():
    "The mode tables are complete on import of their module alone, so no import order changes what a model can do."
    code = ("import sys, scale_sae.switch as s; "
            "print(sorted(s.GATES), sorted(s.DISPATCH), 'scale_sae.moe' in sys.modules)")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    assert out.split('\n')[0] == ("['hard', 'prob', 'renorm', 'softmax'] ['auto', 'dense', 'padded', 'sparse'] False")


def test_autocast_bf16_gradients_agree_across_dispatch_modes():
    "The grouped kernel's own backward under bf16 autocast: float32 gradients, within bf16 rounding of the other modes'."
    grads = {}
    for mode in ('sparse', 'padded', 'dense'):
        torch.manual_seed(0)
        sae = ScaleSAE(32, 256, 8, 8, e=2, dispatch=mode)
        with torch.no_grad(): sae.omega.uniform_(-0.5, 1.0); sae.b_dec.normal_()
        with torch.autocast('cpu', dtype=torch.bfloat16): sae.loss(torch.randn(256, 32))['loss'].backward()
        grads[mode] = {n: p.grad for n, p in sae.named_parameters() if p.requires_grad}
    for mode in ('padded', 'dense'):
        for n, g in grads['sparse'].items():
            assert g.dtype == torch.float32, n
            assert (g - grads[mode][n]).norm() <= 0.05 * g.norm() + 1e-6, (mode, n)
