"""Do stored outputs made at an older commit still come from the numerics of the current code?

    python tests/same_numerics.py REV      # e.g. the commit a notebook's outputs were last stored at

Runs one probe under the working tree and under a temporary `git worktree` of REV, each in a fresh process with one
thread, and compares what they print: every SAE class of the book (TopK, Switch, multi-expert, Scale, ReLU, Gated,
JumpReLU, BatchTopK) trained 60 steps on planted features with fixed seeds (a digest of the weights, the loss
history, the held-out metrics, the redundancy report, the firing count), then the language-model path (the tiny LM,
the activation buffer's first batches, a TopK SAE trained on them, its loss recovered). Exit 0 when every figure is
equal, bit for bit; 1 with the differences otherwise. A refactor that moves code between cells or modules must
leave this at 0; a change that alters a number means the notebooks that show it must run again.
"""
import json, os, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = r'''
import hashlib, json, torch
torch.set_num_threads(1)
from scale_sae.sae import TopKSAE
from scale_sae.switch import SwitchSAE
from scale_sae.moe import MultiExpertSAE
from scale_sae.core import ScaleSAE
from scale_sae.baselines import ReLUSAE, GatedSAE, JumpReLUSAE, BatchTopKSAE
from scale_sae.synthetic import SyntheticData
from scale_sae.trainer import Trainer
from scale_sae.metrics import reconstruction_metrics, latent_frequency, loss_recovered
from scale_sae.redundancy import redundancy_report
from scale_sae.lm import tiny_lm
from scale_sae.corpora import python_docs_corpus
from scale_sae.buffer import ActivationBuffer, token_contexts

def digest(*ts):
    h = hashlib.sha256()
    for t in ts: h.update(t.detach().double().cpu().numpy().tobytes())
    return h.hexdigest()[:16]

out = {}
data = SyntheticData(d_in=32, n_features=256, avg_l0=8, seed=0)
models = dict(topk=lambda: TopKSAE(32, 256, k=8, dead_tokens=512), switch=lambda: SwitchSAE(32, 256, 8, 4),
              moe=lambda: MultiExpertSAE(32, 256, 8, 4, e=2), scale=lambda: ScaleSAE(32, 256, 8, 4, e=2),
              relu=lambda: ReLUSAE(32, 256, 8), gated=lambda: GatedSAE(32, 256, 8), jumprelu=lambda: JumpReLUSAE(32, 256, 8),
              batchtopk=lambda: BatchTopKSAE(32, 256, k=8))
for name, make in models.items():
    torch.manual_seed(0)
    sae = make()
    trainer = Trainer(sae, 60, lr=1e-3, log_every=10)
    trainer.fit(data.batches(256, seed=3), progress=False)
    torch.manual_seed(7); x = data.sample(2048)
    sae.eval()
    m = reconstruction_metrics(sae, x)
    report = redundancy_report(sae.W_dec.detach(), n_experts=getattr(sae, "n_experts", 1))
    out[name] = dict(weights=digest(*sae.state_dict().values()), mse=float(m["mse"]), l0=float(m["l0"]),
                     history=[float(r.get("loss", r.get("mse", 0))) for r in trainer.history],
                     redundancy={k: float(v) for k, v in report.items() if isinstance(v, (int, float))},
                     fired=int((latent_frequency(sae, x) > 0).sum()))

model, tokenizer = tiny_lm()
docs = python_docs_corpus()
buf = ActivationBuffer(model, tokenizer, docs.select(range(400)), layer=2, ctx_len=64, n_ctxs=64, batch_size=512,
                       model_batch_size=32, progress=False)
batches = [next(buf) for _ in range(6)]
torch.manual_seed(0)
sae = TopKSAE(buf.d_in, 512, k=16)
Trainer(sae, 5, lr=1e-3).fit(iter(batches[:5]), progress=False)
sae.eval()
ctx = torch.stack([c for c, _ in zip(token_contexts(docs.select(range(400, 500)), tokenizer, 64), range(8))])
out["lm_path"] = dict(lm=digest(*model.state_dict().values()), batches=digest(*batches), sae=digest(*sae.state_dict().values()),
                      mse=float(reconstruction_metrics(sae, batches[5])["mse"]), recovered=loss_recovered(model, sae, ctx, 2))
print(json.dumps(out, sort_keys=True, default=float))
'''

def probe(checkout: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(checkout), OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    env.pop("CI", None)  # full-size code paths, as the stored outputs were made
    run = subprocess.run([sys.executable, "-c", PROBE], cwd=tempfile.gettempdir(), env=env, capture_output=True, text=True)
    if run.returncode: sys.exit(f"the probe failed under {checkout}:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])

def flat(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict): yield from flat(v, f"{prefix}{k}.")
        else: yield f"{prefix}{k}", v

if __name__ == "__main__":
    if len(sys.argv) != 2: sys.exit(__doc__)
    rev = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        old_tree = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(old_tree), rev], cwd=ROOT, check=True)
        try: old = probe(old_tree)
        finally: subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=ROOT)
    new = probe(ROOT)
    a, b = dict(flat(old)), dict(flat(new))
    diff = [f"{k}: {a.get(k)!r} at {rev}, {b.get(k)!r} now" for k in sorted(a.keys() | b.keys())
            if json.dumps(a.get(k)) != json.dumps(b.get(k))]
    print(f"{len(a)} figures compared between {rev} and the working tree: " + ("all equal" if not diff else f"{len(diff)} differ"))
    for line in diff: print("  " + line)
    sys.exit(1 if diff else 0)
