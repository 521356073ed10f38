#!/usr/bin/env python3
"""Developer-run: builds the demo's shipped sample from ../shared/data and trains its small
SentencePiece tokenizer. Output (committed): java/src/main/resources/dev/limactl/demo/
  train.jsonl, dev.jsonl   LIMA-jsonl examples with provenance (url, license, ids, scores)
  tokenizer.model          BPE SentencePiece, 1,024 pieces, byte fallback, trained on the sample
  ATTRIBUTION.md           sources and licenses
Only redistributable text is taken: StackExchange (CC BY-SA, attributed per example) and
Super-Natural Instructions (Apache-2.0); not the non-commercial wikiHow text.
A stand-in until the curation pipeline (limactl curate) produces this sample.
    pip install sentencepiece && python3 ci/make-demo-data.py
"""
import glob
import html
import html.parser
import json
import os
import random
import xml.etree.ElementTree as ET

import sentencepiece as spm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "data")
OUT = os.path.join(ROOT, "java", "src", "main", "resources", "dev", "limactl", "demo")


class Text(html.parser.HTMLParser):
    """HTML body -> plain text keeping paragraphs, list items and code; links keep their text."""

    def __init__(self):
        super().__init__()
        self.parts = []

    def handle_starttag(self, tag, attrs):
        if tag == "li":
            self.parts.append("\n- ")
        elif tag in ("p", "pre", "br", "h1", "h2", "h3", "blockquote"):
            self.parts.append("\n\n" if tag != "br" else "\n")

    def handle_data(self, data):
        self.parts.append(data)

    def text(self):
        s = "".join(self.parts)
        lines = [l.rstrip() for l in s.split("\n")]
        out = "\n".join(lines)
        while "\n\n\n" in out:
            out = out.replace("\n\n\n", "\n\n")
        return out.strip()


def to_text(body):
    p = Text()
    p.feed(body)
    return p.text()


def stackexchange():
    rows = ET.parse(os.path.join(SHARED, "stackexchange", "coffee.stackexchange.com", "Posts.xml")).getroot()
    q, answers = {}, {}
    for r in rows:
        a = r.attrib
        if a.get("PostTypeId") == "1":
            q[a["Id"]] = a
        elif a.get("PostTypeId") == "2":
            answers.setdefault(a["ParentId"], []).append(a)
    out = []
    for qid, qa in q.items():
        if qid not in answers:
            continue
        top = max(answers[qid], key=lambda a: int(a["Score"]))
        text = to_text(top["Body"])
        if not (400 <= len(text) <= 2500) or int(top["Score"]) < 3:
            continue
        out.append(dict(conversations=[qa["Title"], text], source="stackexchange", id=f"coffee-{qid}",
                        provenance=dict(exchange="coffee.stackexchange.com", question_id=qid, answer_id=top["Id"],
                                        score=top["Score"], url=f"https://coffee.stackexchange.com/q/{qid}",
                                        license="CC BY-SA 3.0")))
    out.sort(key=lambda e: -int(e["provenance"]["score"]))
    return out[:52]


def super_ni():
    out = []
    for path in sorted(glob.glob(os.path.join(SHARED, "natural-instructions", "tasks", "*.json"))):
        task = json.load(open(path))  # python's json accepts the bare NaN of task045
        name = os.path.basename(path)[:-5]
        for inst in task["Instances"][:2]:
            if not inst["output"] or not isinstance(inst["output"][0], str):
                continue
            out.append(dict(conversations=[task["Definition"][0].strip() + "\n\n" + inst["input"].strip(),
                                           inst["output"][0].strip()], source="super-ni", id=f"{name}-{inst['id']}",
                            provenance=dict(task=name, instance_id=inst["id"], license="Apache-2.0",
                                            url="https://github.com/allenai/natural-instructions")))
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    se, ni = stackexchange(), super_ni()
    rnd = random.Random(7)
    rnd.shuffle(se)
    rnd.shuffle(ni)
    dev = se[:4] + ni[:2]
    train = se[4:] + ni[2:]
    for name, rows, split in (("train.jsonl", train, "train"), ("dev.jsonl", dev, "dev")):
        with open(os.path.join(OUT, name), "w") as f:
            for r in rows:
                f.write(json.dumps(dict(r, split=split), ensure_ascii=False) + "\n")
    corpus = os.path.join(OUT, "corpus.tmp.txt")
    with open(corpus, "w") as f:
        for r in train + dev:
            for t in r["conversations"]:
                f.write(t.replace("\n", " ") + "\n")
    spm.SentencePieceTrainer.train(input=corpus, model_prefix=os.path.join(OUT, "tokenizer"), vocab_size=1024,
                                   model_type="bpe", byte_fallback=True, split_digits=True, character_coverage=0.9995,
                                   unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=2, minloglevel=2)
    os.remove(corpus)
    os.remove(os.path.join(OUT, "tokenizer.vocab"))
    with open(os.path.join(OUT, "ATTRIBUTION.md"), "w") as f:
        f.write("# Demo sample: sources and licenses\n\n"
                "`train.jsonl` and `dev.jsonl` hold a small sample of real examples, made by `ci/make-demo-data.py`.\n\n"
                "- StackExchange: questions and top answers from coffee.stackexchange.com (data dump, 2015),\n"
                "  licensed CC BY-SA 3.0 (https://creativecommons.org/licenses/by-sa/3.0/). Each example names its\n"
                "  question URL; the answers' text was converted from HTML to plain text.\n"
                "- Super-Natural Instructions (https://github.com/allenai/natural-instructions), Apache-2.0:\n"
                "  task definition + instance input as the prompt, the first reference output as the response.\n\n"
                "`tokenizer.model` is a SentencePiece BPE model (1,024 pieces, byte fallback) trained on this sample.\n\n"
                "Examples:\n\n")
        for r in train + dev:
            f.write(f"- {r['id']}: {r['provenance']['url']} ({r['provenance']['license']})\n")
    print(f"train {len(train)}, dev {len(dev)} examples -> {OUT}")


if __name__ == "__main__":
    main()
