"""Text tokenizer: identifiers stay atomic, training is deterministic, save/load and Qwen paths work."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from tokenizers.pre_tokenizers import ByteLevel
from transformers import Qwen2Tokenizer

from proxy3d.model.text_tokenizer import (
    BOS_TOKEN,
    EOS_TOKEN,
    IM_END,
    IM_START,
    OBJECT_TOKENS,
    PAD_TOKEN,
    PROXY_TOKEN,
    build_text_tokenizer,
    decode,
    load,
    object_ids_from_token_ids,
    object_token_ids,
    parse_object_ids,
    proxy_token_id,
    save,
)

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["chair", "table", "lamp", "sofa", "bed", "window", "door", "shelf", "desk", "sink"]


def corpus(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.sample(WORDS, 2)
        i, j = rng.sample(range(100), 2)
        out.append(f"Which object is the {a}? {a} <OBJ{i:03d}>. The {b} <OBJ{j:03d}> is next to it.")
    return out


@pytest.fixture(scope="module")
def tok():
    return build_text_tokenizer(corpus(), vocab_size=600)


def _sha(tok) -> str:
    return hashlib.sha256(tok.backend_tokenizer.to_str().encode()).hexdigest()


@pytest.mark.parametrize("text, obj", [("chair <OBJ036>.", [36]), ("<OBJ001><OBJ002>", [1, 2]),
                                       ("lamp<OBJ099>,<OBJ000>x", [99, 0])])
def test_identifiers_are_single_ids(tok, text, obj):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    table = object_token_ids(tok)
    assert [t for t in ids if t in table] == [table[k] for k in obj]
    assert object_ids_from_token_ids(ids, tok) == obj
    assert all(not (s.startswith("<OBJ") and len(s) != 8) for s in tok.convert_ids_to_tokens(ids))


@pytest.mark.parametrize("text", ["chair <OBJ036>.", "<OBJ001> <OBJ002>", "Is the lamp near the sofa?  Yes.",
                                  f"{IM_START}user\nwhere?{PROXY_TOKEN}{PROXY_TOKEN}{IM_END}", "café 3.5 m ✓"])
def test_decode_round_trips(tok, text):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert decode(tok, ids) == text


def _spaced_identifier_is_predicted_from_the_word(tok) -> None:
    """" chair <OBJ036>" is [" chair", "<OBJ036>"]: no contentless " " token between a word and its identifier
    (the token the identifier would otherwise be predicted from), also in the answer the codec encodes."""
    toks = tok.convert_ids_to_tokens(tok(" chair <OBJ036>", add_special_tokens=False)["input_ids"])
    assert toks[-1] == "<OBJ036>" and tok.convert_tokens_to_string(toks[:-1]) == " chair"
    assert tok.convert_ids_to_tokens(tok(" <OBJ001> <OBJ002>", add_special_tokens=False)["input_ids"]) == [
        "<OBJ001>", "<OBJ002>"]


def test_an_identifier_takes_the_space_before_it(tok, tmp_path):
    _spaced_identifier_is_predicted_from_the_word(tok)
    save(tok, tmp_path / "ckpt")
    _spaced_identifier_is_predicted_from_the_word(load(tmp_path / "ckpt"))


def test_special_tokens_present_and_distinct(tok):
    assert tok.pad_token == PAD_TOKEN and tok.bos_token == BOS_TOKEN and tok.eos_token == EOS_TOKEN
    singles = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, IM_START, IM_END, PROXY_TOKEN, *OBJECT_TOKENS]
    ids = [tok.convert_tokens_to_ids(t) for t in singles]
    assert len(set(ids)) == len(singles) and tok.unk_token_id not in ids
    assert object_token_ids(tok) == list(range(ids[6], ids[6] + 100))
    assert proxy_token_id(tok) == tok(PROXY_TOKEN, add_special_tokens=False)["input_ids"][0]
    assert len(tok) <= 600
    assert not any(t.startswith("<OBJ") for t in tok.get_vocab() if t not in OBJECT_TOKENS)


def test_training_is_deterministic_and_order_free(tok):
    texts = corpus()
    random.Random(1).shuffle(texts)
    assert _sha(build_text_tokenizer(texts, vocab_size=600)) == _sha(tok)


def test_training_is_deterministic_across_processes(tok):
    """The Rust trainer's hash maps are seeded per process: a fresh interpreter must agree too."""
    code = ("import hashlib; from tests.test_text_tokenizer import corpus; "
            "from proxy3d.model.text_tokenizer import build_text_tokenizer as b; "
            "print(hashlib.sha256(b(corpus(), 600).backend_tokenizer.to_str().encode()).hexdigest())")
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == _sha(tok)


def test_save_load_equal(tok, tmp_path):
    save(tok, tmp_path / "ckpt")
    back = load(tmp_path / "ckpt")
    assert back.get_vocab() == tok.get_vocab()
    assert object_token_ids(back) == object_token_ids(tok)
    text = f"{IM_START}What is <OBJ036>?{IM_END} chair <OBJ036>.{EOS_TOKEN}"
    assert back(text)["input_ids"] == tok(text)["input_ids"]
    assert (back.pad_token_id, back.bos_token_id, back.eos_token_id) == (tok.pad_token_id, tok.bos_token_id,
                                                                         tok.eos_token_id)


def test_load_without_tokenizer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer_config.json"):
        load(tmp_path)


def test_missing_qwen_path_errors(tmp_path):
    missing = tmp_path / "no-qwen"
    with pytest.raises(FileNotFoundError, match=r"model\.tokenizer.*no-qwen"):
        build_text_tokenizer(corpus(5), 600, qwen_path=str(missing))


def test_qwen_tokenizer_gets_project_tokens(tmp_path):
    """A real transformers Qwen2Tokenizer (tiny vocabulary) saved to disk and loaded by path."""
    vocab = {c: i for i, c in enumerate(sorted(ByteLevel.alphabet()))}
    vocab.update({"ch": len(vocab), "ai": len(vocab) + 1})
    Qwen2Tokenizer(vocab=vocab, merges=[("c", "h"), ("a", "i")]).save_pretrained(tmp_path / "qwen")
    tok = build_text_tokenizer([], 0, qwen_path=str(tmp_path / "qwen"))
    assert isinstance(tok, Qwen2Tokenizer) and tok.eos_token == "<|endoftext|>"
    ids = tok("chair <OBJ036>.<OBJ001><OBJ002>", add_special_tokens=False)["input_ids"]
    assert object_ids_from_token_ids(ids, tok) == [36, 1, 2]
    assert tok.convert_ids_to_tokens(ids)[:2] == ["ch", "ai"]  # the Qwen merges are kept
    assert len(set(object_token_ids(tok))) == 100 and proxy_token_id(tok) != tok.unk_token_id
    save(tok, tmp_path / "ckpt")
    assert object_token_ids(load(tmp_path / "ckpt")) == object_token_ids(tok)
    _spaced_identifier_is_predicted_from_the_word(load(tmp_path / "ckpt"))


def test_vocab_size_too_small_errors():
    with pytest.raises(ValueError, match=r"model\.vocab_size=300"):
        build_text_tokenizer(corpus(5), vocab_size=300)


def test_parse_object_ids():
    assert parse_object_ids("chair <OBJ036> and <OBJ007>, not <OBJ123> or <OBJ12>") == [36, 7]
    assert parse_object_ids("nothing here") == []
