#!/usr/bin/env python3
"""The peer of lima_bench_generate: Hugging Face transformers generate() on CPU (fp32, SDPA, KV
cache, greedy), same config and shapes. Prints one JSON line."""
import argparse
import json
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

p = argparse.ArgumentParser()
for k, v in dict(hidden=128, layers=4, heads=4, kv_heads=2, ffn=344, vocab=1025, batch=1, prompt=512, new=256, threads=2).items():
    p.add_argument("--" + k.replace("_", "-"), type=int, default=v)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.ffn, num_hidden_layers=a.layers,
                  num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, max_position_embeddings=2048,
                  attn_implementation="sdpa")
model = LlamaForCausalLM(cfg).float().eval()
ids = torch.randint(0, a.vocab, (a.batch, a.prompt))
with torch.no_grad():
    t0 = time.perf_counter()
    model(input_ids=ids)  # prefill alone, for the prefill time
    t1 = time.perf_counter()
    out = model.generate(ids, max_new_tokens=a.new, min_new_tokens=a.new, do_sample=False, pad_token_id=0)
    t2 = time.perf_counter()
dec = (t2 - t1) - (t1 - t0)
print(json.dumps(dict(impl="hf-transformers-generate-cpu", params=sum(x.numel() for x in model.parameters()), batch=a.batch,
                      prompt=a.prompt, new=a.new, threads=a.threads, prefill_s=round(t1 - t0, 3),
                      decode_tokens_per_s=round(a.batch * a.new / dec, 1), torch=torch.__version__)))
