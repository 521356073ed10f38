#!/usr/bin/env python3
"""Writes the golden files liblima's ctest compares against: tiny random Hugging Face
LlamaForCausalLM checkpoints (fp32) plus, for one fixed masked batch, the logits, the loss and the
gradient of every parameter computed by transformers on CPU.

Also the greedy continuation `generate` gives for a fixed prompt.
Run by a developer (needs torch, transformers, safetensors), not by CI:
    python3 cpp/tests/golden/make_golden.py cpp/tests/data/golden
Cases:
  gqa_odd   : hidden 45 (odd), 9 heads of head_dim 6 (explicit), 3 KV heads (GQA), untied LM head
  tied      : hidden 32, 4 heads, 4 KV heads, tied embeddings, rope_theta 500000
  rope_llama3, rope_linear: transformers' rotary scaling (Llama 3.1 and linear)
  bias      : attention_bias and mlp_bias
Pass case names after the directory to write just those.
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

CASES = {
    "gqa_odd": dict(vocab_size=67, hidden_size=45, intermediate_size=48, num_hidden_layers=2,
                    num_attention_heads=9, num_key_value_heads=3, head_dim=6, rms_norm_eps=1e-5,
                    rope_theta=10000.0, tie_word_embeddings=False),
    "tied": dict(vocab_size=53, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=4, rms_norm_eps=1e-6,
                 rope_theta=500000.0, tie_word_embeddings=True),
    # Llama 3.1's rotary scaling with a tiny original context, so every band (kept, blended, divided)
    # is used by the 11 positions; and linear scaling (Llama 3.2 1B/3B style tied embeddings)
    "rope_llama3": dict(vocab_size=61, hidden_size=64, intermediate_size=48, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=500000.0,
                        tie_word_embeddings=False,
                        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                          original_max_position_embeddings=16)),
    "bias": dict(vocab_size=47, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False,
                 attention_bias=True, mlp_bias=True),
    "rope_linear": dict(vocab_size=59, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=10000.0,
                        tie_word_embeddings=True, rope_scaling=dict(rope_type="linear", factor=4.0)),
}


def make(out_dir, name, kw):
    torch.manual_seed(1234)
    cfg = LlamaConfig(max_position_embeddings=64, initializer_range=0.2, bos_token_id=1,
                      eos_token_id=2, pad_token_id=None, attn_implementation="eager", **kw)
    model = LlamaForCausalLM(cfg).float()
    with torch.no_grad():  # non-trivial norm gains, so their gradients and uses are checked
        for n, p in model.named_parameters():
            if "norm" in n:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif n.endswith(".bias"):  # transformers starts them at 0; random ones check their use
                p.copy_(0.1 * torch.randn_like(p))
    ckpt = os.path.join(out_dir, name)
    model.save_pretrained(ckpt, safe_serialization=True)

    B, T = 2, 11
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(3, cfg.vocab_size, (B, T), generator=g)
    attn = torch.ones(B, T, dtype=torch.long)
    attn[1, 8:] = 0  # row 1 is right-padded: 3 padding tokens
    mask = torch.zeros(B, T, dtype=torch.long)
    mask[0, 4:] = 1   # "response" tokens
    mask[1, 2:6] = 1
    labels = ids.masked_fill((mask == 0) | (attn == 0), -100)

    model.zero_grad()
    out = model(input_ids=ids, attention_mask=attn, labels=labels)
    out.loss.backward()
    tensors = {
        "input_ids": ids.float(), "attention_mask": attn.float(), "loss_mask": mask.float(),
        "logits": out.logits.detach().float(), "loss": out.loss.detach().reshape(1).float(),
    }
    for n, p in model.named_parameters():
        tensors["grad." + n] = p.grad.detach().float().contiguous()
    # Greedy decoding with transformers' generate (KV cache): 16 new tokens after a 6-token prompt.
    prompt = torch.tensor([[1, 17, 5, 33, 9, 21]])
    with torch.no_grad():
        gen = model.generate(prompt, max_new_tokens=16, do_sample=False, num_beams=1, pad_token_id=0,
                             eos_token_id=None)
    tensors["generate.prompt"] = prompt.float()
    tensors["generate.output"] = gen.float()
    save_file(tensors, os.path.join(out_dir, name + ".golden.safetensors"))
    print(name, "loss", out.loss.item(), "params", sum(p.numel() for p in model.parameters()))


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "cpp/tests/data/golden"
    os.makedirs(out_dir, exist_ok=True)
    only = sys.argv[2:]  # case names: regenerate just those
    for name, kw in CASES.items():
        if not only or name in only:
            make(out_dir, name, kw)
    if only:  # a partial run leaves README.md (which names every generator's run) to be edited by hand
        return
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write("Golden data written by cpp/tests/golden/make_golden.py with torch %s, transformers %s.\n"
                % (torch.__version__, __import__("transformers").__version__))


if __name__ == "__main__":
    main()
