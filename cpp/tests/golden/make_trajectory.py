#!/usr/bin/env python3
"""Writes the training-trajectory reference liblima's ctest compares against: 10 optimiser steps of
LIMA's recipe (AdamW beta 0.9/0.95, weight decay 0.1 on matrices only, eps 1e-8, linear learning-rate
decay without warm-up, global-norm gradient clipping, loss = mean over response tokens, dropout off)
on the small GQA golden model (cpp/tests/data/golden/gqa_odd), computed with transformers'
LlamaForCausalLM and torch.optim.AdamW on the CPU in fp32.

Each step has its own batch of two right-padded rows with a loss mask. Written: per step the batch,
the learning rate, the loss and the gradient norm before clipping; the clipping threshold; the final
value of every parameter.
Run by a developer (needs torch, transformers, safetensors), not by CI:
    python3 cpp/tests/golden/make_trajectory.py cpp/tests/data/golden
"""
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import LlamaForCausalLM

STEPS = 10
LR_START, LR_END = 1e-3, 1e-4  # larger than LIMA's 1e-5 so that 10 steps move the weights visibly
GRAD_CLIP = 9.0  # between the smallest and largest gradient norms of the 10 steps: some clip, some do not


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "cpp/tests/data/golden"
    torch.manual_seed(0)
    model = LlamaForCausalLM.from_pretrained(os.path.join(out_dir, "gqa_odd"), torch_dtype=torch.float32,
                                             attn_implementation="eager")
    model.train()  # dropout probabilities are 0 in this config: train mode changes nothing else
    decay = [p for n, p in model.named_parameters() if p.ndim == 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR_START, betas=(0.9, 0.95), eps=1e-8, foreach=False, fused=False)
    B, T, V = 2, 13, model.config.vocab_size
    g = torch.Generator().manual_seed(11)
    out = {"grad_clip": torch.tensor([GRAD_CLIP])}
    losses, norms, lrs = [], [], []
    for s in range(STEPS):
        lr = LR_START + (LR_END - LR_START) * s / (STEPS - 1)
        for group in opt.param_groups:
            group["lr"] = lr
        ids = torch.randint(3, V, (B, T), generator=g)
        attn = torch.ones(B, T, dtype=torch.long)
        attn[1, T - 2 - s % 4:] = 0  # row 1 right-padded by 2..5 tokens
        mask = torch.zeros(B, T, dtype=torch.long)
        mask[0, 3 + s % 3:] = 1
        mask[1, 2:7] = 1
        labels = ids.masked_fill((mask == 0) | (attn == 0), -100)
        opt.zero_grad()
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        out["step%d.input_ids" % s] = ids.float()
        out["step%d.attention_mask" % s] = attn.float()
        out["step%d.loss_mask" % s] = mask.float()
        losses.append(loss.item())
        norms.append(norm.item())
        lrs.append(lr)
    out["loss"] = torch.tensor(losses, dtype=torch.float32)
    out["grad_norm"] = torch.tensor(norms, dtype=torch.float32)
    out["lr"] = torch.tensor(lrs, dtype=torch.float32)
    for n, p in model.named_parameters():
        out["final." + n] = p.detach().float().contiguous()
    save_file(out, os.path.join(out_dir, "gqa_odd.trajectory.safetensors"))
    clipped = sum(1 for n in norms if n > GRAD_CLIP)
    print("losses", ["%.5f" % x for x in losses])
    print("grad norms", ["%.4f" % x for x in norms], "clipped", clipped, "of", STEPS)
    assert 0 < clipped < STEPS, "choose GRAD_CLIP so that some steps clip and some do not"


if __name__ == "__main__":
    main()
