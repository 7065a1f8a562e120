"""Reference sentence vectors of all-MiniLM-L6-v2, computed independently of the Rust code.

Written from the published architecture only: BERT's uncased WordPiece tokenizer (vocab.txt) and a
BERT encoder forward pass in numpy over model.safetensors, then mean pooling over the attention
mask and L2 normalisation, as the package's modules.json and 1_Pooling/config.json prescribe.
No candle, no tokenizers crate, no transformers library.

    python3 minilm_reference.py MODEL_DIR > minilm_reference.json
"""
import json
import struct
import sys
import unicodedata

import numpy as np

SENTENCES = [
    "a fresh cats guide for beginners",
    "Toy Story (1995)",
    "The quick brown fox jumps over the lazy dog.",
    "why I love dogs-review #42",
    "Caf\u00e9 cr\u00e8me, na\u00efve r\u00e9sum\u00e9!",
]


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        dtype = {"F32": np.float32, "I64": np.int64}[meta["dtype"]]
        out[name] = np.frombuffer(data[start:end], dtype=dtype).reshape(meta["shape"])
    return out


def is_punct(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def basic_tokens(text):
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    out, cur = [], ""
    for ch in text:
        if ch.isspace():
            if cur:
                out.append(cur)
            cur = ""
        elif is_punct(ch):
            if cur:
                out.append(cur)
            out.append(ch)
            cur = ""
        else:
            cur += ch
    if cur:
        out.append(cur)
    return out


def wordpiece(word, vocab):
    pieces, start = [], 0
    while start < len(word):
        end, found = len(word), None
        while start < end:
            sub = word[start:end] if start == 0 else "##" + word[start:end]
            if sub in vocab:
                found = sub
                break
            end -= 1
        if found is None:
            return ["[UNK]"]
        pieces.append(found)
        start = end
    return pieces


def tokenize(text, vocab):
    ids = [vocab["[CLS]"]]
    for w in basic_tokens(text):
        ids.extend(vocab[p] for p in wordpiece(w, vocab))
    return ids[:511] + [vocab["[SEP]"]]


def layer_norm(x, w, b, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu(x):
    from math import erf, sqrt

    return 0.5 * x * (1.0 + np.vectorize(erf)(x / sqrt(2.0)))


def encode(ids, t, cfg):
    h, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    d = h // heads
    x = (
        t["embeddings.word_embeddings.weight"][ids]
        + t["embeddings.position_embeddings.weight"][: len(ids)]
        + t["embeddings.token_type_embeddings.weight"][0]
    ).astype(np.float64)
    x = layer_norm(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"])
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        lin = lambda v, n: v @ t[p + n + ".weight"].T.astype(np.float64) + t[p + n + ".bias"]
        q = lin(x, "attention.self.query").reshape(-1, heads, d).transpose(1, 0, 2)
        k = lin(x, "attention.self.key").reshape(-1, heads, d).transpose(1, 0, 2)
        v = lin(x, "attention.self.value").reshape(-1, heads, d).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(d)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(1, 0, 2).reshape(-1, h)
        x = layer_norm(x + lin(ctx, "attention.output.dense"),
                       t[p + "attention.output.LayerNorm.weight"], t[p + "attention.output.LayerNorm.bias"])
        inter = gelu(lin(x, "intermediate.dense"))
        x = layer_norm(x + lin(inter, "output.dense"),
                       t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"])
    v = x.mean(0)  # one sentence, no padding: the mask is all ones
    return v / np.linalg.norm(v)


def main(model_dir):
    vocab = {}
    with open(f"{model_dir}/vocab.txt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            vocab[line.rstrip("\n")] = i
    cfg = json.load(open(f"{model_dir}/config.json"))
    t = load_safetensors(f"{model_dir}/model.safetensors")
    out = []
    for s in SENTENCES:
        ids = tokenize(s, vocab)
        out.append({"text": s, "ids": ids, "vector": [round(float(x), 7) for x in encode(ids, t, cfg)]})
    json.dump(out, sys.stdout, indent=0)


if __name__ == "__main__":
    main(sys.argv[1])
