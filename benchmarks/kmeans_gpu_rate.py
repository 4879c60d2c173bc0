"""GPU rate of k-means' exact assignment (issue 28: checks the plan's assumed ``gpu_gflops``).

Nearest centroid of N x D rows among k centroids as blocked ``x @ c.T`` + argmax (cosine), the
work ``2 N k D`` flops, in fp32 (TF32 off) and TF32, with torch on the first CUDA device. Torch,
not FAISS: the locked ``faiss-cpu`` has no GPU index (``kmeans.use_gpu`` then runs on the CPU).

    python -m benchmarks.kmeans_gpu_rate --n 1000000 --k 66226 --d 128
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, default=66_226)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--block", type=int, default=65_536)
    args = ap.parse_args()
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(args.n, args.d, device=dev, generator=g), dim=1)
    c = torch.nn.functional.normalize(torch.randn(args.k, args.d, device=dev, generator=g), dim=1)
    out = {"device": torch.cuda.get_device_name(0), "n": args.n, "k": args.k, "d": args.d}
    for name, tf32 in (("fp32", False), ("tf32", True)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        best = float("inf")
        for _ in range(3):
            torch.cuda.synchronize()
            t = time.perf_counter()
            for a in range(0, args.n, args.block):
                (x[a : a + args.block] @ c.T).argmax(dim=1)
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        out[f"{name}_s"] = best
        out[f"{name}_gflops"] = 2 * args.n * args.k * args.d / best / 1e9
    print(json.dumps(out))


if __name__ == "__main__":
    main()
