"""Loads a limactl checkpoint with Hugging Face transformers as a user would, and prints what the Java
test compares with limactl: AutoTokenizer ids of the given texts (no special tokens, and with them),
apply_chat_template ids of the given conversations, and greedy generate's new tokens for the given
prompts (ids), with the generation config's stop tokens.

usage: check_hf_checkpoint.py CHECKPOINT INPUT.json  (INPUT: {"texts": [...], "conversations": [...], "prompts": [[ids]...], "max_new_tokens": N,
                                                          "eot_token": the end-of-turn token, "<|eot|>" unless given})
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

ck, inp = sys.argv[1], json.load(open(sys.argv[2], encoding="utf-8"))
tok = AutoTokenizer.from_pretrained(ck)
out = {
    "len": len(tok),
    "eot_id": tok.convert_tokens_to_ids(inp.get("eot_token", "<|eot|>")),
    "texts": [tok(t, add_special_tokens=False)["input_ids"] for t in inp["texts"]],
    "with_bos": tok(inp["texts"][0])["input_ids"],
    "decoded": [tok.decode(tok(t, add_special_tokens=False)["input_ids"]) for t in inp["texts"]],
    "chats": [],
}
for c in inp["conversations"]:
    ids = tok.apply_chat_template(c, add_generation_prompt=True, tokenize=True)
    out["chats"].append(list(ids["input_ids"]) if hasattr(ids, "keys") else list(ids))  # a BatchEncoding in newer transformers
if inp.get("prompts"):
    model = AutoModelForCausalLM.from_pretrained(ck, torch_dtype=torch.float32)
    gc = GenerationConfig.from_pretrained(ck)
    out["generation_eos"] = gc.eos_token_id
    gens = []
    for p in inp["prompts"]:
        ids = torch.tensor([p])
        g = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, repetition_penalty=1.0,
                           max_new_tokens=inp["max_new_tokens"], pad_token_id=gc.pad_token_id)
        gens.append(g[0, len(p):].tolist())
    out["generated"] = gens
print(json.dumps(out))
