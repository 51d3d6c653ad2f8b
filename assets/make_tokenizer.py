#!/usr/bin/env python3
"""Build Kiln's CLIP tokenizer asset (assets/models/kiln-tiny/tokenizer/tokenizer.json).

The vocabulary is OpenAI CLIP's BPE vocabulary ("bpe_simple_vocab_16e6.txt.gz") as
shipped inside the open_clip_torch PyPI package. From it we write the vocab.json /
merges.txt pair that Hugging Face's CLIP tokenizers use, build the tokenizers-backed
transformers `CLIPTokenizer` from them (the exact class diffusers'
StableDiffusionPipeline uses), and save its backend `tokenizers` JSON.

Run from anywhere:
    /root/.cache/kiln-py/bin/python assets/make_tokenizer.py

`build_clip_tokenizer(tmpdir)` is imported by tests/fixtures/make_fixtures.py so the
fixtures use the very same construction.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
# The one copy in the tree: the shipped model's (the engine compiles it in, the fixture
# folders get copies: tests/fixtures/stored.py).
OUT_PATH = os.path.join(HERE, "models", "kiln-tiny", "tokenizer", "tokenizer.json")

BOS_ID = 49406
EOS_ID = 49407
VOCAB_SIZE = 49408
# CLIP's SimpleTokenizer keeps the first 49152 - 256 - 2 lines after the header.
NUM_MERGES = 49152 - 256 - 2  # 48894

EXPECTED = {"a photo of a cat": [49406, 320, 1125, 539, 320, 2368, 49407]}


def bpe_vocab_path() -> str:
    # open_clip is installed --no-deps and only its data file is used: locate the package
    # without importing it (importing needs torchvision).
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("open_clip_torch is not installed")
    path = os.path.join(list(spec.submodule_search_locations)[0], "bpe_simple_vocab_16e6.txt.gz")
    if not os.path.isfile(path):
        raise FileNotFoundError(path)
    return path


def open_clip_version() -> str:
    from importlib.metadata import version

    return version("open_clip_torch")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable unicode char mapping (same order as CLIP's)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def load_clip_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Reproduce CLIP's SimpleTokenizer vocab/merges construction exactly."""
    with gzip.open(bpe_vocab_path()) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
    assert len(merges) == NUM_MERGES and all(len(m) == 2 for m in merges)
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == VOCAB_SIZE and len(set(vocab)) == VOCAB_SIZE
    return {tok: i for i, tok in enumerate(vocab)}, merges


def write_vocab_and_merges(tmpdir: str) -> tuple[str, str]:
    vocab, merges = load_clip_bpe()
    vocab_file = os.path.join(tmpdir, "vocab.json")
    merges_file = os.path.join(tmpdir, "merges.txt")
    with open(vocab_file, "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(merges_file, "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    return vocab_file, merges_file


def build_clip_tokenizer(tmpdir: str):
    """Return the tokenizers-backed transformers CLIPTokenizer built from CLIP's BPE files.

    vocab.json and merges.txt are written into `tmpdir` and loaded the same way
    `CLIPTokenizer.from_pretrained(<sd-folder>/tokenizer)` loads them in diffusers.
    """
    from transformers import CLIPTokenizer

    vocab_file, merges_file = write_vocab_and_merges(tmpdir)
    tok = CLIPTokenizer.from_pretrained(tmpdir, model_max_length=77)
    check_tokenizer(tok)
    # Direct construction must give the very same backend. Note: in transformers 5 the file
    # paths must be passed POSITIONALLY (as `vocab`/`merges`); the keyword names
    # `vocab_file=`/`merges_file=` are silently ignored by CLIPTokenizer.__init__ and yield a
    # 3-token placeholder vocabulary.
    direct = CLIPTokenizer(vocab_file, merges_file)
    if direct.backend_tokenizer.to_str() != tok.backend_tokenizer.to_str():
        raise AssertionError("CLIPTokenizer(vocab_file, merges_file) differs from from_pretrained()")
    return tok


def check_tokenizer(tok) -> None:
    assert tok.bos_token_id == BOS_ID and tok.eos_token_id == EOS_ID and tok.pad_token_id == EOS_ID, (
        tok.bos_token_id,
        tok.eos_token_id,
        tok.pad_token_id,
    )
    assert len(tok) == VOCAB_SIZE, len(tok)
    for text, ids in EXPECTED.items():
        got = tok(text).input_ids
        if got != ids:
            raise AssertionError(f"{text!r}: got {got}, expected {ids}")
        got = tok.backend_tokenizer.encode(text).ids
        if got != ids:
            raise AssertionError(f"backend {text!r}: got {got}, expected {ids}")


def tokenizer_json_bytes(tok) -> bytes:
    """Deterministic serialization of the backend tokenizer.

    `tokenizers` writes the vocab ordered by id and the merges in rank order, so its
    compact `to_str()` is already stable; we re-dump it through `json` (same field order,
    compact separators, UTF-8, trailing newline) to pin the exact byte format.
    """
    raw = tok.backend_tokenizer.to_str()
    data = json.loads(raw)
    out = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    assert out == raw, "tokenizers serialization is not canonical JSON any more"
    return (out + "\n").encode("utf-8")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        tok = build_clip_tokenizer(tmp)
        blob = tokenizer_json_bytes(tok)
        # Serializing twice must give the same bytes.
        assert blob == tokenizer_json_bytes(tok)
    with open(OUT_PATH, "wb") as f:
        f.write(blob)

    # Re-load the written file with the plain `tokenizers` library (what the Rust crate
    # mirrors) and check it.
    from tokenizers import Tokenizer

    t = Tokenizer.from_file(OUT_PATH)
    for text, ids in EXPECTED.items():
        got = t.encode(text).ids
        if got != ids:
            raise AssertionError(f"reloaded {text!r}: got {got}, expected {ids}")
    print(f"wrote {OUT_PATH} ({len(blob)} bytes), open_clip_torch {open_clip_version()}")
    print(f"sha256 {hashlib.sha256(blob).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
