#!/usr/bin/env python3
"""Checks that PEFT reads an adapter limactl wrote as limactl does: loads BASE with transformers,
attaches ADAPTER with PeftModel.from_pretrained, and compares its logits for the token ids in
EXPECTED (a JSON file {"ids": [...], "logits": [...] (len(ids) x vocab, limactl's)}); with MERGED,
also that transformers on the merged checkpoint (limactl merge) gives the same logits.
Exit 0 when every difference is within 1e-4 (relative to the largest logit), 1 otherwise.
    python3 check_peft_adapter.py BASE ADAPTER EXPECTED [MERGED]
Run by the Java tests when python3 with torch, transformers and peft is there."""
import json
import sys

import torch
from peft import PeftModel
from transformers import LlamaForCausalLM


def main():
    base_dir, adapter_dir, expected = sys.argv[1:4]
    merged_dir = sys.argv[4] if len(sys.argv) > 4 else None
    exp = json.load(open(expected))
    ids = torch.tensor([exp["ids"]])
    want = torch.tensor(exp["logits"], dtype=torch.float32).reshape(len(exp["ids"]), -1)
    base = LlamaForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32, attn_implementation="eager")
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    with torch.no_grad():
        got = model(input_ids=ids).logits[0]
    scale = want.abs().max().item()
    errs = {"peft": (got - want).abs().max().item() / scale}
    if merged_dir:
        merged = LlamaForCausalLM.from_pretrained(merged_dir, torch_dtype=torch.float32, attn_implementation="eager")
        with torch.no_grad():
            errs["merged"] = (merged(input_ids=ids).logits[0] - want).abs().max().item() / scale
    print(json.dumps(errs))
    sys.exit(0 if all(e < 1e-4 for e in errs.values()) else 1)


if __name__ == "__main__":
    main()
