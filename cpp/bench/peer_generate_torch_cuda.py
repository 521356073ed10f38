#!/usr/bin/env python3
"""The GPU peer of lima_bench_generate --cuda 1: Hugging Face transformers generate() (bf16, SDPA,
KV cache; --static 1: the static cache) on the same shape, prompt and number of new tokens, greedy or
(--sample 1) LIMA's sampling. --bandwidth 1 instead measures the GPU's memory bandwidth (a 4 GiB
device copy, read + write), for the batch-1 decode limit. Prints one JSON line."""
import argparse
import json
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

p = argparse.ArgumentParser()
for k, v in dict(hidden=4096, layers=8, heads=32, kv_heads=0, ffn=11008, vocab=32000, batch=1, prompt=512, new=256,
                 static=0, sample=0, bandwidth=0).items():
    p.add_argument("--" + k.replace("_", "-"), type=int, default=v)
a = p.parse_args()
dev = torch.device("cuda")

if a.bandwidth:
    x = torch.empty(1 << 31, dtype=torch.bfloat16, device=dev)  # 4 GiB
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    reps = 20
    for _ in range(reps):
        y.copy_(x)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    print(json.dumps(dict(impl="device-copy", hbm_gb_per_s=round(2 * x.numel() * 2 * reps / dt / 1e9, 1),
                          gpu=torch.cuda.get_device_name())))
    raise SystemExit

torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.ffn, num_hidden_layers=a.layers,
                  num_attention_heads=a.heads, num_key_value_heads=a.kv_heads or a.heads,
                  max_position_embeddings=max(2048, a.prompt + a.new + 1), attn_implementation="sdpa")
model = LlamaForCausalLM(cfg).to(device=dev, dtype=torch.bfloat16).eval()
ids = torch.randint(0, a.vocab, (a.batch, a.prompt), device=dev)
kw = dict(do_sample=bool(a.sample), pad_token_id=0)
if a.sample:
    kw.update(temperature=0.7, top_p=0.9, repetition_penalty=1.2)
if a.static:
    kw.update(cache_implementation="static")
with torch.no_grad():
    model.generate(ids, max_new_tokens=4, min_new_tokens=4, **kw)  # warm-up
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    model(input_ids=ids)  # prefill alone, for the prefill time
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    model.generate(ids, max_new_tokens=a.new, min_new_tokens=a.new, **kw)
    torch.cuda.synchronize()
    t2 = time.perf_counter()
dec = (t2 - t1) - (t1 - t0)
print(json.dumps(dict(impl="hf-generate" + ("-static" if a.static else ""), params=sum(x.numel() for x in model.parameters()),
                      batch=a.batch, prompt=a.prompt, new=a.new, sample=a.sample, prefill_s=round(t1 - t0, 3),
                      decode_tokens_per_s=round(a.batch * a.new / dec, 1), peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 1),
                      torch=torch.__version__)))
