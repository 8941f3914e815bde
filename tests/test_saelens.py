"""SAELens registration in fresh processes: `import scale_sae` stays cheap, and SAELens loads our routed SAEs whichever
of the two packages is imported first. Chapters 07 and 07a check the files and the computations themselves."""
import importlib.util, os, subprocess, sys, textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
HAVE_SAELENS = importlib.util.find_spec("sae_lens") is not None
# the README install step installs the `saelens` extra; in CI its absence is a failure, elsewhere a skip
needs_saelens = pytest.mark.skipif(not HAVE_SAELENS and not os.environ.get("CI"),
                                   reason="sae-lens not installed: pip install -e '.[saelens]'")

def run_python(code):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout

def test_import_is_cheap():
    "`import scale_sae` loads neither torch nor SAELens: the registration only waits for SAELens."
    out = run_python("""
        import sys, scale_sae
        print('torch' in sys.modules, 'sae_lens' in sys.modules, scale_sae.__file__)""")
    torch_loaded, saelens_loaded, path = out.split()
    assert (torch_loaded, saelens_loaded) == ("False", "False")
    assert Path(path).resolve() == ROOT / "scale_sae" / "__init__.py"

@pytest.fixture(scope="module")
def scale_folder(tmp_path_factory):
    "A random Scale SAE (e = 2, ω ≠ 0, A ≠ I) in SAELens's format, with inputs and our outputs beside it."
    from scale_sae.core import ScaleSAE
    from scale_sae.interop import randomized, to_saelens
    sae = randomized(ScaleSAE(16, 64, 8, n_experts=4, e=2), seed=5)
    assert sae.omega.abs().min() > 0 and (sae.A - torch.eye(16)).abs().max() > 0.1
    folder = to_saelens(sae, tmp_path_factory.mktemp("export") / "scale")
    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(6))
    with torch.no_grad(): save_file(dict(x=x, out=sae(x)), str(folder.parent / "expected.safetensors"))
    return folder

@needs_saelens
@pytest.mark.parametrize("imports", ["import scale_sae; import sae_lens", "import sae_lens; import scale_sae"])
def test_saelens_loads_ours_in_either_import_order(scale_folder, imports):
    out = run_python(f"""
        {imports}
        import torch
        from safetensors.torch import load_file
        from sae_lens import SAE
        sae = SAE.load_from_disk({str(scale_folder)!r})
        expected = load_file({str(scale_folder.parent / 'expected.safetensors')!r})
        with torch.no_grad(): print(type(sae).__name__, (sae(expected['x']) - expected['out']).abs().max().item())""")
    name, err = out.split()[-2:]
    assert name == "SAELensRoutedSAE" and float(err) < 1e-5

@needs_saelens
def test_failed_registration_warns_and_leaves_saelens_working():
    "Another package owning 'switch' turns our registration into a warning; SAELens's own SAEs still load."
    out = run_python("""
        import warnings
        import sae_lens
        from sae_lens.registry import SAE_CLASS_REGISTRY, register_sae_class
        from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig
        register_sae_class("switch", TopKSAE, TopKSAEConfig)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import scale_sae
        print(any("already has a 'switch'" in str(w.message) for w in caught), SAE_CLASS_REGISTRY["switch"][0].__name__)""")
    assert out.split()[-2:] == ["True", "TopKSAE"]
