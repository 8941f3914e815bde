"""Checks that need a CUDA device; skipped without one (as in CI). Run on a GPU with `python -m pytest -q tests/test_gpu.py`."""
import pytest
import torch

from scale_sae.core import ScaleSAE
from scale_sae.switch import SwitchSAE, check_dispatch_agrees, DISPATCH
import scale_sae.switch as switch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize('make', [lambda: ScaleSAE(64, 2048, 16, 32, e=2), lambda: SwitchSAE(64, 2048, 16, 32)])
def test_dispatch_modes_agree_on_cuda(make):
    torch.manual_seed(0)
    sae = make().cuda().double()
    x = torch.randn(1024, 64, device='cuda', dtype=torch.float64)
    sae.init_from_batch(x)
    check_dispatch_agrees(sae, x, modes=('sparse', 'dense', 'padded', 'auto'), atol=1e-8)


def _count_padded_calls(monkeypatch):
    calls = []
    def counting(*args, **kwargs):
        calls.append(1)
        return DISPATCH['padded'](*args, **kwargs)
    # `dispatch_auto` looks the kernel up in its own module, so that is where the counter goes
    monkeypatch.setattr(switch, 'dispatch_padded', counting)
    return calls


def test_auto_takes_padded_on_cuda(monkeypatch):
    calls = _count_padded_calls(monkeypatch)
    sae = ScaleSAE(64, 2048, 16, 32, e=2).cuda()
    assert sae.dispatch == 'auto'
    sae.encode(torch.randn(4096, 64, device='cuda'))
    assert calls, "auto dispatch did not use the padded kernel on CUDA"


def test_auto_falls_back_to_sparse_when_routing_is_uneven(monkeypatch):
    calls = _count_padded_calls(monkeypatch)
    sae = ScaleSAE(64, 2048, 16, 32, e=2).cuda()
    with torch.no_grad(): sae.b_router[:2] = 50.0  # every token goes to experts 0 and 1: 16x padding
    x = torch.randn(4096, 64, device='cuda')
    assert set(sae.route(x)[0].unique().tolist()) == {0, 1}
    sae.encode(x)
    assert not calls, "auto dispatch padded a 16x uneven routing"


def test_bf16_autocast_step_matches_float32():
    "One loss under bfloat16 autocast stays within bf16 rounding of the float32 loss, with gradients everywhere."
    torch.manual_seed(0)
    sae = ScaleSAE(128, 4096, 32, 64, e=2).cuda()
    x = torch.randn(4096, 128, device='cuda')
    sae.init_from_batch(x)
    full = sae.loss(x)['mse'].item()
    with torch.autocast('cuda', dtype=torch.bfloat16): out = sae.loss(x)
    out['loss'].backward()
    assert abs(out['mse'].item() - full) < 0.02 * full
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in sae.parameters() if p.requires_grad)
