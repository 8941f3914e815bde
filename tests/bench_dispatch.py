"""Benchmark: one training step (forward + backward, no optimizer) of a Scale SAE at the paper's configuration
(d = 768, d_sae = 24,576, E = 64, e = 2, k = 32) with each dispatch mode, beside a dense TopK SAE of equal width.
Prints medians; run `python tests/bench_dispatch.py [--tokens 1024 4096] [--device cuda]`. For a full training step
(clipping, Adam and decoder renormalisation included) use `scale-sae bench`."""
import argparse, time
import torch
from scale_sae.sae import TopKSAE
from scale_sae.core import ScaleSAE


def median_step_seconds(sae, x, repeats):
    times = []
    for _ in range(repeats + 1):  # the first step warms up
        if x.is_cuda: torch.cuda.synchronize()
        start = time.perf_counter()
        sae.zero_grad(set_to_none=True)
        sae.loss(x)['loss'].backward()
        if x.is_cuda: torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--tokens', type=int, nargs='+', default=[1024, 4096])
    parser.add_argument('--d', type=int, default=768)
    parser.add_argument('--d-sae', type=int, default=24_576)
    parser.add_argument('--n-experts', type=int, default=64)
    parser.add_argument('--e', type=int, default=2)
    parser.add_argument('--k', type=int, default=32)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = parser.parse_args()
    torch.manual_seed(0)
    scale = ScaleSAE(args.d, args.d_sae, args.k, args.n_experts, e=args.e).to(args.device)
    dense = TopKSAE(args.d, args.d_sae, args.k).to(args.device)
    print(f"device {args.device}, threads {torch.get_num_threads()}, d={args.d} d_sae={args.d_sae} "
          f"E={args.n_experts} e={args.e} k={args.k}; seconds per step (median of {args.repeats})")
    print(f"{'tokens':>7} {'dense dispatch':>15} {'sparse':>8} {'padded':>8} {'TopK SAE':>9}")
    for n in args.tokens:
        x = torch.randn(n, args.d, device=args.device)
        row = []
        for mode in ('dense', 'sparse', 'padded'):
            scale.dispatch = mode
            row.append(median_step_seconds(scale, x, args.repeats))
        row.append(median_step_seconds(dense, x, args.repeats))
        print(f"{n:>7} {row[0]:>15.3f} {row[1]:>8.3f} {row[2]:>8.3f} {row[3]:>9.3f}")


if __name__ == '__main__':
    main()
