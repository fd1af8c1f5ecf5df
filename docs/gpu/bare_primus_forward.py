"""Primus-S forward on one GPU in a bare process (no nnunetv2 imported): total and per part, fp16 autocast.

    python3 docs/gpu/bare_primus_forward.py     # needs torch, timm, einops, dynamic_network_architectures
"""
import time

import torch
from dynamic_network_architectures.architectures.primus import Primus
from einops import rearrange

PATCH = (80, 160, 160)


def milliseconds(fn, n: int = 20) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return round((time.perf_counter() - start) / n * 1000, 2)


if __name__ == "__main__":
    net = Primus(1, 396, (8, 8, 8), 2, 12, 6, input_shape=PATCH).cuda().eval()
    x = torch.randn(1, 1, *PATCH, device="cuda")
    with torch.inference_mode(), torch.autocast("cuda"):
        tokens = net.down_projection(x)
        _, _, w, h, d = tokens.shape
        sequence = rearrange(tokens, "b c w h d -> b (w h d) c")
        encoded, _ = net.eva(sequence)
        grid = rearrange(encoded, "b (w h d) c -> b c w h d", w=w, h=h, d=d)
        print("ms total", milliseconds(lambda: net(x)), "down", milliseconds(lambda: net.down_projection(x)),
              "eva", milliseconds(lambda: net.eva(sequence)), "up", milliseconds(lambda: net.up_projection(grid)))
