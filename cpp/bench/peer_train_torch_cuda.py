#!/usr/bin/env python3
"""The GPU peer of lima_bench_train --cuda 1: Hugging Face transformers LlamaForCausalLM + PyTorch
on one CUDA device: fp32 weights with bf16 autocast, SDPA attention, fused torch.optim.AdamW
(0.9/0.95, wd 0.1), grad clipping 1.0; eager or torch.compile. Every token a target. With --mix 2
the LIMA-like examples (lengths uniform in [100, 2048], same generator as the liblima bench) go
one per row, padded (HF's SDPA path has no packing); tokens_per_s counts real tokens. Prints one
JSON line with MFU (6N + 6 L d T FLOPs per token over 989 TFLOP/s) and peak memory."""
import argparse
import json
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

p = argparse.ArgumentParser()
for k, v in dict(hidden=768, layers=12, heads=12, ffn=2048, vocab=32000, batch=16, seq=2048, steps=10, warmup=3,
                 compile=0, mix=0).items():
    p.add_argument("--" + k, type=int, default=v)
a = p.parse_args()
torch.manual_seed(0)
dev = "cuda"
cfg = LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.ffn, num_hidden_layers=a.layers,
                  num_attention_heads=a.heads, num_key_value_heads=a.heads, max_position_embeddings=max(2048, a.seq),
                  attn_implementation="sdpa")
model = LlamaForCausalLM(cfg).to(dev).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
ids = torch.randint(0, a.vocab, (a.batch, a.seq), device=dev)
labels = ids.clone()
mask = torch.ones_like(ids)
real = a.batch * a.seq
if a.mix:
    s = 12345 + 0  # the liblima bench's LCG, after its token draws (the lengths differ only by the seed path)
    M = 2**64
    for _ in range(a.batch * a.seq):
        s = (s * 6364136223846793005 + 1442695040888963407) % M
    real = 0
    for r in range(a.batch):
        s = (s * 6364136223846793005 + 1442695040888963407) % M
        n = min(a.seq, 100 + (s >> 33) % 1949)
        mask[r, n:] = 0
        labels[r, n:] = -100
        real += n
step_fn = model
if a.compile:
    step_fn = torch.compile(model)


def step():
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = step_fn(input_ids=ids, attention_mask=mask if a.mix else None, labels=labels).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


for _ in range(a.warmup):
    step()
torch.cuda.synchronize()
torch.cuda.reset_peak_memory_stats()
t0 = time.perf_counter()
for _ in range(a.steps):
    loss = step()
torch.cuda.synchronize()
secs = time.perf_counter() - t0
n = sum(p.numel() for p in model.parameters())
tps = real * a.steps / secs
flops = 6 * n + 6 * a.layers * a.hidden * a.seq
print(json.dumps(dict(impl="hf-torch-" + ("compile" if a.compile else "eager"), params=n, batch=a.batch, seq=a.seq,
                      mix=a.mix, steps=a.steps, tokens_per_s=round(tps, 1), mfu=round(tps * flops / 989e12, 4),
                      step_s=round(secs / a.steps, 4), peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2),
                      final_loss=round(loss.item(), 4), torch=torch.__version__,
                      gpu=torch.cuda.get_device_name())), flush=True)
