#!/usr/bin/env python3
"""Developer-run: ids and pieces the SentencePiece library gives for tricky texts with the LLaMA
tokenizer.model (../shared/data/tokenizers/llama/tokenizer.model) -> llama_golden.json.
    python3 java/src/test/resources/tokenizer/make_golden.py"""
import json
import os

import sentencepiece as spm

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(HERE, "..", "..", "..", "..", "..", "..", "shared", "data", "tokenizers", "llama", "tokenizer.model")
TEXTS = [
    "Hello world", " leading space", "  two leading spaces", "trailing space ", "line one\nline two\n\n",
    "tabs\tand\tspaces", "digits 1234567890 and 3.14159", "emoji 😀🎉 and 👩‍👩‍👧", "CJK 你好，世界 こんにちは 안녕하세요",
    "byte fallback: \u0000\u0001 \U0001F9EC \u2028", "code: def f(x):\n    return x ** 2  # square",
    "Ünïcödé àccents ßtraße", "</s> <s> <unk> are plain text here", "a" * 40, "",
]
sp = spm.SentencePieceProcessor(model_file=MODEL)
out = dict(model_md5="eeec4125e9c7560836b4873b6f8e3025", vocab_size=sp.vocab_size(), bos=sp.bos_id(), eos=sp.eos_id(),
           cases=[dict(text=t, ids=sp.encode(t), pieces=sp.encode(t, out_type=str), decoded=sp.decode(sp.encode(t)))
                  for t in TEXTS])
with open(os.path.join(HERE, "llama_golden.json"), "w") as f:
    json.dump(out, f, ensure_ascii=False, indent=1)
print(len(TEXTS), "cases")

# A small Hugging Face tokenizer.json (BPE, Metaspace like LLaMA's) trained with the tokenizers
# library on the demo sample, and the ids that library gives: checks the tokenizer.json path.
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

DEMO_TRAIN = os.path.join(HERE, "..", "..", "..", "main", "resources", "dev", "limactl", "demo", "train.jsonl")
texts = [t for line in open(DEMO_TRAIN) for t in json.loads(line)["conversations"]]
hf = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
hf.pre_tokenizer = pre_tokenizers.Metaspace()
hf.decoder = decoders.Metaspace()
hf.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"]))
hf.save(os.path.join(HERE, "small_tokenizer.json"))
PLAIN = ["How should I store whole bean coffee?", "Grind 20 grams, brew 4 minutes.\nThen pour.", "espresso crema"]
json.dump(dict(vocab_size=hf.get_vocab_size(), cases=[dict(text=t, ids=hf.encode(t).ids, pieces=hf.encode(t).tokens)
                                                       for t in PLAIN]),
          open(os.path.join(HERE, "small_tokenizer_golden.json"), "w"), ensure_ascii=False, indent=1)
print("small tokenizer.json written")
