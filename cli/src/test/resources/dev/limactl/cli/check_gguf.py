"""Reads a limactl GGUF export with the gguf package (llama.cpp's reader) and compares it with the
Hugging Face checkpoint it came from: every tensor (dequantised, q/k rows un-permuted back to Hugging
Face's layout) within the type's rounding, and the metadata. Prints one JSON line of findings.

usage: check_gguf.py FILE.gguf CHECKPOINT_DIR TYPE
"""
import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import load_file
import glob

path, ck, typ = sys.argv[1], sys.argv[2], sys.argv[3]
r = GGUFReader(path)
cfg = json.load(open(ck + "/config.json"))
hf = {}
for f in sorted(glob.glob(ck + "/*.safetensors")):
    hf.update({k: v.astype(np.float32) for k, v in load_file(f).items()})


def field(name):
    f = r.fields[name]
    if f.types and f.types[0].name == "STRING" and len(f.types) == 1:
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    if f.types[0].name == "ARRAY":
        if f.types[1].name == "STRING":
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return [f.parts[i].tolist()[0] for i in f.data]
    return f.parts[f.data[0]].tolist()[0]


def permute(w, heads):  # llama.cpp's
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"}
parts = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
         "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
         "ffn_down": "mlp.down_proj"}
worst, count, types = 0.0, 0, set()
rope_freqs = None
for t in r.tensors:
    name = t.name
    if name == "rope_freqs.weight":  # llama3 rope: llama.cpp's converter's factors, compared below
        rope_freqs = t.data.astype(np.float32).tolist()
        continue
    if name.startswith("blk."):
        _, l, part, kind = name.split(".")
        hfname = "model.layers.%s.%s.%s" % (l, parts[part], kind)
    else:
        hfname = names[name]
    want = hf[hfname]
    if "q_proj" in hfname:
        want = permute(want, cfg["num_attention_heads"])
    if "k_proj" in hfname:
        want = permute(want, cfg.get("num_key_value_heads", cfg["num_attention_heads"]))
    got = dequantize(t.data, t.tensor_type).reshape(want.shape).astype(np.float32)
    types.add(t.tensor_type.name)
    if want.ndim == 1:
        err = float(np.max(np.abs(got - want)))
        assert err == 0.0, (name, err)
    else:
        # allowed error per element: f16/bf16 relative rounding; q8_0 half a step of its block's scale (plus the f16 scale's rounding)
        kind = t.tensor_type.name  # Q8_0 files keep F16 for rows that are not blocks of 32, as llama.cpp's converter does
        assert kind == typ.upper() or (typ == "q8_0" and kind == "F16" and want.shape[1] % 32 != 0), (name, kind)
        if kind == "Q8_0":
            blocks = np.abs(want.reshape(-1, 32)).max(axis=1, keepdims=True) / 127.0
            tol = np.repeat(blocks * 0.5 + blocks * 127 * 1e-3, 32, axis=1).reshape(want.shape)
        else:
            tol = np.abs(want) * (2 ** -8 if kind == "BF16" else 2 ** -11) + 1e-7
        bad = np.abs(got - want) > tol
        assert not bad.any(), (name, float(np.max(np.abs(got - want))))
        err = float(np.max(np.abs(got - want)))
    worst = max(worst, err)
    count += 1

out = {
    "tensors": count, "types": sorted(types), "worst": worst,
    "arch": field("general.architecture"), "blocks": field("llama.block_count"), "embd": field("llama.embedding_length"),
    "heads": field("llama.attention.head_count"), "kv_heads": field("llama.attention.head_count_kv"),
    "ctx": field("llama.context_length"), "ff": field("llama.feed_forward_length"),
    "n_tokens": len(field("tokenizer.ggml.tokens")), "last_token": field("tokenizer.ggml.tokens")[-1],
    "bos": field("tokenizer.ggml.bos_token_id"), "eos": field("tokenizer.ggml.eos_token_id"), "eot": field("tokenizer.ggml.eot_token_id"),
    "last_type": field("tokenizer.ggml.token_type")[-1], "template": field("tokenizer.chat_template"), "file_type": field("general.file_type"),
}
out["tensors"] = count
out["tok_model"] = field("tokenizer.ggml.model")
toks, kinds = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.token_type")
out["eot_token"], out["eot_type"] = toks[out["eot"]], kinds[out["eot"]]
if "tokenizer.ggml.merges" in r.fields:
    out["pre"] = field("tokenizer.ggml.pre")
    out["merges"] = field("tokenizer.ggml.merges")
    out["tokens"] = toks
scaling = cfg.get("rope_scaling") or {}
if scaling.get("rope_type") == "llama3":
    import math
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    freqs = 1.0 / (cfg["rope_theta"] ** (np.arange(0, hd, 2, dtype=np.float32) / hd))
    f, lo, hi, old = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"], scaling["original_max_position_embeddings"]
    want = []
    for fr in freqs:
        wl = 2 * math.pi / fr
        if wl < old / hi:
            want.append(1.0)
        elif wl > old / lo:
            want.append(f)
        else:
            sm = (old / wl - lo) / (hi - lo)
            want.append(1 / ((1 - sm) / f + sm))
    assert rope_freqs is not None and np.allclose(rope_freqs, want, rtol=1e-5), (rope_freqs, want)
    out["rope_freqs"] = len(rope_freqs)
if scaling.get("rope_type") == "linear":
    out["scaling_type"] = field("llama.rope.scaling.type")
    out["scaling_factor"] = field("llama.rope.scaling.factor")
print(json.dumps(out))
