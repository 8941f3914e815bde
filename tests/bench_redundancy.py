"""Wall time and memory of `redundancy_report` at the paper's dictionary size.

Not collected by pytest (the name does not start with `test_`). Run: python tests/bench_redundancy.py [--block-size N]
Decoder rows are random unit vectors; the cost does not depend on their values."""
import argparse, resource, time

import torch

from scale_sae.redundancy import redundancy_report


def rss_mib() -> float:
    "Current resident set size of this process."
    with open('/proc/self/statm') as f: pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--d-sae', type=int, default=24_576)
    parser.add_argument('--d', type=int, default=768)
    parser.add_argument('--n-experts', type=int, default=64)
    parser.add_argument('--block-size', type=int, default=2048)
    parser.add_argument('--repeats', type=int, default=1)
    args = parser.parse_args()

    torch.manual_seed(0)
    W_dec = torch.randn(args.d_sae, args.d)
    W_dec /= W_dec.norm(dim=1, keepdim=True)  # in place, so building the input does not raise the peak
    dense_gib = args.d_sae ** 2 * 4 / 2**30
    print(f"d_sae={args.d_sae} d={args.d} n_experts={args.n_experts} block_size={args.block_size} "
          f"threads={torch.get_num_threads()}; the full cosine matrix would take {dense_gib:.2f} GiB")

    rss_before, peak_before = rss_mib(), peak_rss_mib()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        report = redundancy_report(W_dec, args.n_experts)
        times.append(time.perf_counter() - start)
    rss_after, peak_after = rss_mib(), peak_rss_mib()

    print(f"wall time: {min(times):.2f} s (best of {len(times)}: {', '.join(f'{t:.2f}' for t in times)})")
    print(f"RSS before {rss_before:.0f} MiB, after {rss_after:.0f} MiB; peak RSS before {peak_before:.0f} MiB, "
          f"after {peak_after:.0f} MiB; peak above the starting RSS: {peak_after - rss_before:.0f} MiB")
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in report.items()})


if __name__ == '__main__':
    main()
