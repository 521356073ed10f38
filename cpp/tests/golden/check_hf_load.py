#!/usr/bin/env python3
"""Developer-run check (not CI): checkpoints written by liblima load in Hugging Face transformers
unchanged and give the same logits. Trains a tiny GQA model a few steps through the C ABI (ctypes),
saves it fp32, bf16 and sharded, loads each with LlamaForCausalLM.from_pretrained and compares logits.
    python3 cpp/tests/golden/check_hf_load.py build/cpp/liblima.so
With --checkpoint DIR it instead loads an existing checkpoint (e.g. an epoch checkpoint of
`limactl train`) with both liblima and transformers and compares their logits:
    python3 cpp/tests/golden/check_hf_load.py build/cpp/liblima.so --checkpoint RUN/checkpoints/epoch-15
"""
import ctypes as C
import os
import sys
import tempfile

import numpy as np
import torch
from transformers import LlamaForCausalLM


class ModelConfig(C.Structure):
    _fields_ = [(n, C.c_int32) for n in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                                        "num_kv_heads", "head_dim", "max_position_embeddings")] + \
               [("rms_norm_eps", C.c_float), ("rope_theta", C.c_float)] + \
               [(n, C.c_int32) for n in ("tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id")] + \
               [("initializer_range", C.c_float)]


class TrainConfig(C.Structure):
    _fields_ = [(n, C.c_float) for n in ("beta1", "beta2", "eps", "weight_decay", "grad_clip", "resid_dropout")] + \
               [("seed", C.c_uint64)]


def check_checkpoint(lib, ok, path):
    m = C.c_void_p()
    ok(lib.lima_model_load(path.encode(), b"cpu", C.byref(m)))
    cfg = ModelConfig()
    ok(lib.lima_model_get_config(m, C.byref(cfg)))
    V, B, T = cfg.vocab_size, 1, 48
    tok = np.random.default_rng(1).integers(0, V, size=B * T).astype(np.int32)
    tok[-1] = V - 1  # the EOT token added by limactl
    b = C.c_void_p()
    ok(lib.lima_batch_create(B, T, C.byref(b)))
    ok(lib.lima_batch_set(b, tok.ctypes.data_as(C.c_void_p), None, None))
    logits = np.zeros(B * T * V, dtype=np.float32)
    ok(lib.lima_model_logits(m, b, logits.ctypes.data_as(C.c_void_p), C.c_int64(logits.size)))
    hf = LlamaForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        ref = hf(input_ids=torch.from_numpy(tok.reshape(B, T)).long()).logits.numpy().reshape(-1)
    err = np.abs(ref - logits).max() / np.abs(ref).max()
    print(f"{path}: vocab {V}, max rel logit err {err:.2e}", "ok" if err < 1e-4 else "FAIL")
    sys.exit(0 if err < 1e-4 else 1)


def main():
    lib = C.CDLL(sys.argv[1] if len(sys.argv) > 1 else "build/cpp/liblima.so")
    lib.lima_last_error.restype = C.c_char_p

    def ok(st):
        if st != 0:
            raise RuntimeError(lib.lima_last_error().decode())

    if "--checkpoint" in sys.argv:
        check_checkpoint(lib, ok, sys.argv[sys.argv.index("--checkpoint") + 1])

    cfg = ModelConfig()
    lib.lima_model_config_init(C.byref(cfg))
    cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size, cfg.num_layers = 97, 64, 96, 2
    cfg.num_heads, cfg.num_kv_heads, cfg.rope_theta, cfg.max_position_embeddings = 8, 2, 500000.0, 128
    m = C.c_void_p()
    ok(lib.lima_model_create(C.byref(cfg), b"cpu", C.c_uint64(3), C.byref(m)))
    ok(lib.lima_model_resize_vocab(m, 98))  # as when the EOT token is added
    tc = TrainConfig()
    lib.lima_train_config_init(C.byref(tc))
    tc.resid_dropout = 0.2
    t = C.c_void_p()
    ok(lib.lima_trainer_create(m, C.byref(tc), C.byref(t)))
    B, T = 2, 24
    rng = np.random.default_rng(0)
    tok = rng.integers(0, 98, size=B * T).astype(np.int32)
    mask = np.ones(B * T, dtype=np.uint8)
    b = C.c_void_p()
    ok(lib.lima_batch_create(B, T, C.byref(b)))
    ok(lib.lima_batch_set(b, tok.ctypes.data_as(C.c_void_p), mask.ctypes.data_as(C.c_void_p), None))
    for _ in range(3):
        ok(lib.lima_trainer_forward_backward(t, b, C.c_int64(B * (T - 1)), None))
        ok(lib.lima_trainer_step(t, C.c_float(1e-3), None))
    logits = np.zeros(B * T * 98, dtype=np.float32)
    ok(lib.lima_model_logits(m, b, logits.ctypes.data_as(C.c_void_p), C.c_int64(logits.size)))
    logits = logits.reshape(B, T, 98)
    with tempfile.TemporaryDirectory() as d:
        for name, dtype, shard in (("fp32", 0, 0), ("bf16", 1, 0), ("sharded", 0, 40000)):
            path = os.path.join(d, name)
            ok(lib.lima_model_save(m, path.encode(), dtype, C.c_int64(shard)))
            hf = LlamaForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
            with torch.no_grad():
                ref = hf(input_ids=torch.from_numpy(tok.reshape(B, T)).long()).logits.numpy()
            err = np.abs(ref - logits).max() / np.abs(ref).max()
            limit = 2e-2 if name == "bf16" else 1e-5
            status = "ok" if err < limit else "FAIL"
            print(f"{name:8} files={sorted(os.listdir(path))} max rel logit err {err:.2e} (limit {limit}) {status}")
            if status != "ok":
                sys.exit(1)
    print("liblima checkpoints load in transformers", __import__("transformers").__version__, "unchanged")


if __name__ == "__main__":
    main()
