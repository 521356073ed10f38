"""Makes a Llama-3-shaped tiny base model as a user would bring one: a byte-level BPE tokenizer.json
(trained here with the `tokenizers` library on the given texts) with Llama 3's special tokens
(<|begin_of_text|> as BOS through the post-processor, <|end_of_text|> as EOS, its own <|eot_id|>),
and a random LlamaForCausalLM with rope_type "llama3", tied embeddings and grouped-query attention.

usage: make_llama3_base.py OUT_DIR TEXTS.json
"""
import json
import sys

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

out, texts = sys.argv[1], json.load(open(sys.argv[2], encoding="utf-8"))
specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
bpe = Tokenizer(models.BPE())
bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
bpe.decoder = decoders.ByteLevel()
bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=700, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
bpe.add_special_tokens(specials)
bos = bpe.token_to_id("<|begin_of_text|>")
bpe.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=False),
                                          processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                                                                        special_tokens=[("<|begin_of_text|>", bos)])])
tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")
tok.save_pretrained(out)
cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512, rope_theta=500000.0,
                  rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 128},
                  tie_word_embeddings=True, bos_token_id=bos, eos_token_id=tok.eos_token_id, initializer_range=0.2)
torch.manual_seed(0)
LlamaForCausalLM(cfg).save_pretrained(out, safe_serialization=True)
print(json.dumps({"vocab": len(tok), "bos": bos, "eos": tok.eos_token_id, "eot": bpe.token_to_id("<|eot_id|>")}))
