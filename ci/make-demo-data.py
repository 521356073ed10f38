#!/usr/bin/env python3
"""Developer-run: makes the demo's shipped sample with the curation pipeline and trains its small
SentencePiece tokenizer. Output (committed): java/src/main/resources/dev/limactl/demo/
  train.jsonl, dev.jsonl   `limactl curate --preset demo --root ../shared/data`, exported as LIMA jsonl
  tokenizer.model          BPE SentencePiece, 1,024 pieces, byte fallback, trained on the sample
  ATTRIBUTION.md           sources and licenses, one line per example
The demo recipe takes only redistributable text: StackExchange (CC BY-SA) and Super-Natural
Instructions (Apache-2.0), not the non-commercial wikiHow text nor Reddit's.
    mvn -B -q install -DskipTests && pip install sentencepiece && python3 ci/make-demo-data.py
"""
import json
import os
import subprocess
import tempfile

import sentencepiece as spm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "java", "src", "main", "resources", "dev", "limactl", "demo")
LIMACTL = os.path.join(ROOT, "cli", "bin", "limactl")


def main():
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([LIMACTL, "-q", "curate", "--preset", "demo", "--root", os.path.join(ROOT, "..", "shared", "data"),
                        "--out", tmp], check=True)
        for split in ("train", "dev"):
            subprocess.run([LIMACTL, "-q", "data", "export", os.path.join(tmp, split + ".arrow"),
                            os.path.join(OUT, split + ".jsonl")], check=True)
    rows = [json.loads(l) for split in ("train", "dev") for l in open(os.path.join(OUT, split + ".jsonl"))]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as corpus:
        for r in rows:
            for t in r["conversations"]:
                corpus.write(t.replace("\n", " ") + "\n")
    spm.SentencePieceTrainer.train(input=corpus.name, model_prefix=os.path.join(OUT, "tokenizer"), vocab_size=1024,
                                   model_type="bpe", byte_fallback=True, split_digits=True, character_coverage=0.9995,
                                   unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=2, minloglevel=2)
    os.remove(corpus.name)
    os.remove(os.path.join(OUT, "tokenizer.vocab"))
    with open(os.path.join(OUT, "ATTRIBUTION.md"), "w") as f:
        f.write("# Demo sample: sources and licenses\n\n"
                "`train.jsonl` and `dev.jsonl` are the output of `limactl curate --preset demo --root ../shared/data`\n"
                "(made by `ci/make-demo-data.py`), exported as LIMA jsonl with each example's provenance.\n\n"
                "- StackExchange: questions and top answers from coffee.stackexchange.com (data dump, 2015),\n"
                "  licensed CC BY-SA 3.0 (https://creativecommons.org/licenses/by-sa/3.0/); each example names its\n"
                "  question URL; answers were converted from HTML to Markdown by the curation pipeline.\n"
                "- Super-Natural Instructions (https://github.com/allenai/natural-instructions), Apache-2.0:\n"
                "  task definition + instance input as the prompt, the first reference output as the response.\n\n"
                "`tokenizer.model` is a SentencePiece BPE model (1,024 pieces, byte fallback) trained on this sample.\n\n"
                "Examples:\n\n")
        for r in rows:
            p = r["provenance"]
            f.write(f"- {r['id']} ({r['split']}): {p.get('url', '')} ({p['license']})\n")
    print(f"{len(rows)} examples -> {OUT}")


if __name__ == "__main__":
    main()
