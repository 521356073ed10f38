#!/usr/bin/env python3
"""The peer of lima_bench_train: Hugging Face transformers LlamaForCausalLM + PyTorch on CPU, fp32,
SDPA attention, torch.optim.AdamW, same config, same batch shape, every token a target.
Prints one JSON line. Needs torch and transformers (pip, from the machine's package index)."""
import argparse
import json
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

p = argparse.ArgumentParser()
for k, v in dict(hidden=256, layers=4, heads=4, ffn=688, vocab=4096, batch=8, seq=256, steps=10, warmup=2,
                 threads=2).items():
    p.add_argument("--" + k, type=int, default=v)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.ffn, num_hidden_layers=a.layers,
                  num_attention_heads=a.heads, num_key_value_heads=a.heads, max_position_embeddings=max(2048, a.seq),
                  attn_implementation="sdpa")
model = LlamaForCausalLM(cfg).float().train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
ids = torch.randint(0, a.vocab, (a.batch, a.seq))
secs = 0.0
for i in range(a.warmup + a.steps):
    t0 = time.perf_counter()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if i >= a.warmup:
        secs += time.perf_counter() - t0
print(json.dumps(dict(impl="hf-transformers-torch-cpu", params=sum(p.numel() for p in model.parameters()),
                      threads=a.threads, batch=a.batch, seq=a.seq, steps=a.steps,
                      tokens_per_s=round(a.batch * a.seq * a.steps / secs, 1), step_s=round(secs / a.steps, 4),
                      final_loss=round(loss.item(), 4), torch=torch.__version__)))
