"""Text tokenizer of the VLM: a local Qwen tokenizer, or a byte-level BPE trained on SpaceSpan text.

Both variants carry the same extra special tokens, so the model and the data code never branch on
which one is in use:

- ``<OBJ000>`` … ``<OBJ099>``: object identifiers (one id each, in order; :func:`object_token_ids`);
- ``<|proxy|>`` (:data:`PROXY_TOKEN`): placeholder replaced by one proxy feature row in ``inputs_embeds``;
- pad / bos / eos and the chat markers ``<|im_start|>`` / ``<|im_end|>``.

Special tokens are matched before pre-tokenization, so ``"chair <OBJ036>."`` and ``"<OBJ001><OBJ002>"``
always give one id per identifier. An identifier absorbs the space before it (``lstrip``): ``"chair <OBJ036>"``
is `` chair``, ``<OBJ036>``, so the identifier is predicted from the word it names. With the space as a token of
its own, the identifier of "Which object is the chair?" had to be predicted from a contentless " " (a two-hop
lookup), and whether a from-scratch tiny model ever learned it depended on rounding: the same seed reached 88%
grounding on one CPU and 17% on another (issue 8). :func:`decode` puts the space back. The tokenizer is saved next to each checkpoint with
``save_pretrained`` (:func:`save`) and reloaded with :func:`load`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast
from transformers.tokenization_utils_base import AddedToken

from proxy3d.vocab import NUM_IDENTIFIERS, identifier_token

log = logging.getLogger(__name__)

PROXY_TOKEN = "<|proxy|>"
PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
OBJECT_TOKENS: tuple[str, ...] = tuple(identifier_token(i) for i in range(NUM_IDENTIFIERS))
# Order fixes the ids of a trained BPE: 0 pad, 1 bos, 2 eos, 3 im_start, 4 im_end, 5 proxy, 6.. OBJ000..
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, IM_START, IM_END, PROXY_TOKEN, *OBJECT_TOKENS)
EXTRA_TOKENS: tuple[str, ...] = (IM_START, IM_END, PROXY_TOKEN, *OBJECT_TOKENS)

_OBJ_RE = re.compile(r"<OBJ(\d{3})>")
# Special-looking markup is removed from training text so BPE merges are not spent on "<OBJ" pieces.
_MARKUP_RE = re.compile(r"<OBJ\d{3}>|<\|[a-z_]+\|>")


def build_text_tokenizer(texts: Iterable[str], vocab_size: int, qwen_path: str = "") -> PreTrainedTokenizerFast:
    """The project's text tokenizer.

    ``qwen_path`` non-empty: load a real Qwen tokenizer from that local folder (``model.tokenizer``) and
    add the special tokens it lacks (``texts`` is ignored). Otherwise train a deterministic byte-level
    BPE of at most ``vocab_size`` ids (``model.vocab_size``, special tokens included) on ``texts``.
    """
    if qwen_path:
        return _load_qwen(qwen_path)
    return _train_bpe(texts, vocab_size)


def _train_bpe(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    floor = 256 + len(SPECIAL_TOKENS)
    if vocab_size < floor:
        raise ValueError(
            f"model.vocab_size={vocab_size} is too small for a byte-level BPE: it needs at least {floor} "
            f"(256 bytes + {len(SPECIAL_TOKENS)} special tokens); raise model.vocab_size in params.yaml"
        )
    cleaned = [_MARKUP_RE.sub(" ", t) for t in texts if t]
    if not cleaned:
        log.warning("no training text for the BPE tokenizer: it will only know single bytes")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[_special(t) for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_sorted(cleaned), trainer=trainer, length=len(cleaned))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        additional_special_tokens=list(EXTRA_TOKENS),
        clean_up_tokenization_spaces=False,
        model_max_length=1 << 20,
    )
    log.info("trained byte-level BPE: %d ids on %d texts", len(fast), len(cleaned))
    return _checked(fast, "trained BPE")


def _special(token: str) -> AddedToken:
    """A project special token; an identifier also takes the whitespace before it (see the module docstring)."""
    return AddedToken(token, special=True, normalized=False, lstrip=token in OBJECT_TOKENS)


def _sorted(texts: list[str]) -> Iterator[str]:
    """Texts in a fixed order: the trained merges must not depend on how the caller ordered them."""
    yield from sorted(texts)


def _load_qwen(path: str) -> PreTrainedTokenizerFast:
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"model.tokenizer: Qwen tokenizer folder '{path}' does not exist; set model.tokenizer in "
            "params.yaml to a local folder holding tokenizer.json / tokenizer_config.json, or to '' to "
            "train the byte-level BPE"
        )
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(
            f"model.tokenizer: could not load a tokenizer from '{path}' ({e}); the folder needs "
            "tokenizer.json or vocab.json + merges.txt with tokenizer_config.json"
        ) from None
    if not isinstance(tok, PreTrainedTokenizerFast):
        raise ValueError(f"model.tokenizer: '{path}' gave a slow tokenizer ({type(tok).__name__}); "
                         "provide tokenizer.json so a fast tokenizer loads")
    missing = {k: v for k, v in (("pad_token", EOS_TOKEN), ("bos_token", BOS_TOKEN), ("eos_token", EOS_TOKEN))
               if getattr(tok, k) is None}
    if missing:
        tok.add_special_tokens(missing)
    vocab = tok.get_vocab()
    new = [t for t in EXTRA_TOKENS if t not in vocab]
    tok.add_tokens([_special(t) for t in new], special_tokens=True)
    return _checked(tok, f"Qwen tokenizer from {path}")


def _checked(tok: PreTrainedTokenizerFast, what: str) -> PreTrainedTokenizerFast:
    """Fail early if an identifier would not be a single id (e.g. a foreign tokenizer splits it)."""
    for t in (*OBJECT_TOKENS, PROXY_TOKEN, IM_START, IM_END):
        ids = tok.encode(t, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"{what}: special token {t!r} encodes to {len(ids)} ids {ids}, expected 1")
    return tok


def save(tok: PreTrainedTokenizerBase, out_dir: str | Path) -> Path:
    """Save ``tok`` into ``out_dir`` (``save_pretrained``; the checkpoint folder)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out))
    return out


def load(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer written by :func:`save` and check the project's special tokens are there."""
    folder = Path(path)
    if not (folder / "tokenizer_config.json").is_file():
        raise FileNotFoundError(f"no saved tokenizer in '{folder}' (tokenizer_config.json missing); "
                                "it is written by proxy3d.model.text_tokenizer.save next to each checkpoint")
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    missing = [t for t in EXTRA_TOKENS if t not in tok.get_vocab()]
    if missing:
        raise ValueError(f"tokenizer in '{folder}' lacks {len(missing)} project tokens (e.g. {missing[0]!r}); "
                         "rebuild it with build_text_tokenizer")
    return _checked(tok, f"tokenizer in {folder}")


_GLUED_RE = re.compile(r"(?<=\S)(<OBJ\d{3}>)")


def decode(tok: PreTrainedTokenizerBase, ids: Sequence[int]) -> str:
    """Text of generated ``ids`` with the space an identifier absorbed put back: ``[" chair", "<OBJ036>"]`` ->
    ``" chair <OBJ036>"`` (special tokens kept)."""
    return _GLUED_RE.sub(r" \1", tok.decode(list(ids), skip_special_tokens=False))


def object_token_ids(tok: PreTrainedTokenizerBase) -> list[int]:
    """Ids of ``<OBJ000>`` … ``<OBJ099>``, in identifier order (length 100)."""
    return [int(tok.convert_tokens_to_ids(t)) for t in OBJECT_TOKENS]


def proxy_token_id(tok: PreTrainedTokenizerBase) -> int:
    """Id of :data:`PROXY_TOKEN`."""
    return int(tok.convert_tokens_to_ids(PROXY_TOKEN))


def parse_object_ids(text: str) -> list[int]:
    """Identifier numbers named in ``text`` in order of appearance: ``"chair <OBJ036>"`` -> ``[36]``.

    Numbers outside 0..99 (e.g. ``<OBJ123>``) are not identifiers and are skipped.
    """
    return [n for n in (int(m) for m in _OBJ_RE.findall(text)) if n < NUM_IDENTIFIERS]


def object_ids_from_token_ids(token_ids: Sequence[int], tok: PreTrainedTokenizerBase) -> list[int]:
    """Identifier numbers among generated ``token_ids`` (no decoding needed), in order."""
    index = {tid: i for i, tid in enumerate(object_token_ids(tok))}
    return [index[int(t)] for t in token_ids if int(t) in index]


def category_token_ids(tok: PreTrainedTokenizerBase, names: Sequence[str]) -> list[list[int]]:
    """Token ids of each category name as it appears inside a sentence (``" " + name``)."""
    return [list(tok.encode(" " + n, add_special_tokens=False)) for n in names]
