#!/usr/bin/env python3
"""Writes the LoRA references liblima's ctest compares against, computed with PEFT over transformers'
LlamaForCausalLM on the CPU in fp32, for the two golden models (gqa_odd: untied LM head, tied: tied):

  <model>_lora/                    a PEFT adapter (adapter_config.json + adapter_model.safetensors as
                                   PeftModel.save_pretrained writes them): r 4, alpha 8, every
                                   projection, trainable token rows for ids [V-1, 7] (V-1 plays LIMA's
                                   EOT); A, B and the token rows random (B not zero), so every
                                   term of the forward and backward is exercised
  <model>.lora.safetensors         one batch (two right-padded rows with a loss mask), the logits,
                                   the loss and the gradient of every adapter tensor ("grad." + PEFT's
                                   saved name); for gqa_odd also 6 AdamW steps of LIMA's recipe over
                                   the adapter (weight decay 0.1 on every adapter tensor, linear
                                   decay, clipping): losses, gradient norms, final adapter tensors

Run by a developer (needs torch, transformers, peft, safetensors), not by CI:
    python3 cpp/tests/golden/make_lora.py cpp/tests/data/golden
"""
import os
import sys

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import LlamaForCausalLM

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
STEPS = 6
LR_START, LR_END = 1e-2, 1e-3
GRAD_CLIP = 6.6  # between the gradient norms of the 6 steps: some clip, some do not


def saved_name(n):
    return n.replace(".default", "")


def batch(g, B, T, V, s=0):
    ids = torch.randint(3, V, (B, T), generator=g)
    ids[0, 4] = V - 1  # the trainable tokens appear as inputs and as targets
    ids[1, 3] = 7
    ids[0, T - 2] = V - 1
    attn = torch.ones(B, T, dtype=torch.long)
    attn[1, T - 2 - s % 3:] = 0
    mask = torch.zeros(B, T, dtype=torch.long)
    mask[0, 3 + s % 2:] = 1
    mask[1, 2:7] = 1
    labels = ids.masked_fill((mask == 0) | (attn == 0), -100)
    return ids, attn, mask, labels


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "cpp/tests/data/golden"
    for name in ["gqa_odd", "tied"]:
        torch.manual_seed(0)
        model = LlamaForCausalLM.from_pretrained(os.path.join(out_dir, name), torch_dtype=torch.float32,
                                                 attn_implementation="eager")
        V = model.config.vocab_size
        tokens = [V - 1, 7]
        tti = tokens if model.config.tie_word_embeddings else {"embed_tokens": tokens, "lm_head": tokens}
        cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS, trainable_token_indices=tti,
                         task_type="CAUSAL_LM")
        pm = get_peft_model(model, cfg)
        g = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if not p.requires_grad:
                    continue
                if "lora_B" in n:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.2)
                elif "trainable_tokens_delta" in n:
                    p.add_(torch.randn(p.shape, generator=g) * 0.05)
        pm.save_pretrained(os.path.join(out_dir, name + "_lora"))
        os.remove(os.path.join(out_dir, name + "_lora", "README.md"))  # PEFT's model-card template
        pm.train()  # dropout probabilities are 0: train mode changes nothing else
        trainable = [(n, p) for n, p in pm.named_parameters() if p.requires_grad]
        out = {}
        ids, attn, mask, labels = batch(g, 2, 13, V)
        res = pm(input_ids=ids, attention_mask=attn, labels=labels)
        res.loss.backward()
        out.update({"input_ids": ids.float(), "attention_mask": attn.float(), "loss_mask": mask.float(),
                    "logits": res.logits.detach().float().contiguous(), "loss": res.loss.detach().reshape(1)})
        for n, p in trainable:
            out["grad." + saved_name(n)] = p.grad.detach().float().contiguous()
        if name == "gqa_odd":
            opt = torch.optim.AdamW([p for _, p in trainable], lr=LR_START, betas=(0.9, 0.95), eps=1e-8,
                                    weight_decay=0.1, foreach=False, fused=False)
            norms, losses, lrs = [], [], []
            clip = GRAD_CLIP
            for s in range(STEPS):
                lr = LR_START + (LR_END - LR_START) * s / (STEPS - 1)
                for group in opt.param_groups:
                    group["lr"] = lr
                ids, attn, mask, labels = batch(g, 2, 13, V, s)
                opt.zero_grad()
                loss = pm(input_ids=ids, attention_mask=attn, labels=labels).loss
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_([p for _, p in trainable], clip)
                opt.step()
                out["step%d.input_ids" % s] = ids.float()
                out["step%d.attention_mask" % s] = attn.float()
                out["step%d.loss_mask" % s] = mask.float()
                losses.append(loss.item())
                norms.append(norm.item())
                lrs.append(lr)
            out["traj.loss"] = torch.tensor(losses)
            out["traj.grad_norm"] = torch.tensor(norms)
            out["traj.lr"] = torch.tensor(lrs)
            out["traj.grad_clip"] = torch.tensor([clip])
            for n, p in trainable:
                out["final." + saved_name(n)] = p.detach().float().contiguous()
            clipped = sum(1 for n in norms if n > clip)
            assert 0 < clipped < STEPS, "choose GRAD_CLIP so that some steps clip and some do not"
            print(name, "losses", ["%.4f" % x for x in losses], "norms", ["%.3f" % x for x in norms], "clip %.3f" % clip)
        save_file(out, os.path.join(out_dir, name + ".lora.safetensors"))
        print(name, "loss %.5f" % res.loss.item(), "tensors", len(trainable))


if __name__ == "__main__":
    main()
