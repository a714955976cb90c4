"""Train a SentencePiece vocabulary with Chinese-XLNet's settings and XLNet's special-id layout.

hfl's `spm_train` flags (chinese-xlnet-facts.md): unigram, vocab 32000, character_coverage 0.99995,
control symbols `<cls> <sep> <pad> <mask> <eod>`, user-defined `<eop> . ( ) " - – £ €`,
shuffle_input_sentence, input_sentence_size 10M. `<unk> <s> </s>` are pinned to 0/1/2 and the
control symbols follow in order, so the ids come out as XLNet's `special_symbols` (checked with
`cxlnet.text.Tokenizer` before the model is moved into place).
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from cxlnet.errors import CxlnetError, atomic_write_bytes
from cxlnet.text import Tokenizer, preprocess_text

CONTROL_SYMBOLS = ["<cls>", "<sep>", "<pad>", "<mask>", "<eod>"]
USER_DEFINED_SYMBOLS = ["<eop>", ".", "(", ")", '"', "-", "–", "£", "€"]

_TOO_BIG = re.compile(r"Please set it to a value <= (\d+)")
_TOO_SMALL = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")


def _read_lines(path: Path) -> list[str]:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CxlnetError(f"{path}: cannot read ({err.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise CxlnetError(f"{path}:{line}: not valid UTF-8") from None
    return text.replace("\r\n", "\n").split("\n")


def train_vocab(
    inputs: list[str | Path],
    model_prefix: str | Path,
    vocab_size: int = 32000,
    character_coverage: float = 0.99995,
    input_sentence_size: int = 10_000_000,
    shuffle: bool = True,
    num_threads: int | None = None,
    seed: int | None = 0,
    lower: bool = False,
    control_symbols: list[str] | None = None,
    user_defined_symbols: list[str] | None = None,
    check_layout: bool = True,
) -> Path:
    """Train `<model_prefix>.model` / `.vocab` from raw corpus files; return the `.model` path.

    Every non-blank line is passed through `preprocess_text` (as the pre-training pipeline does before
    encoding) and written to a temporary file that SentencePiece reads. `seed` seeds SentencePiece's
    global generator (sentence shuffling); `None` leaves it alone. `control_symbols` /
    `user_defined_symbols` default to hfl's lists (override only for tests). With `check_layout`
    the result must pass `Tokenizer`'s special-id check, else nothing is written.
    """
    import sentencepiece as spm

    if not inputs:
        raise CxlnetError("train_vocab: no input files")
    model_prefix = Path(model_prefix)
    control = CONTROL_SYMBOLS if control_symbols is None else list(control_symbols)
    user = USER_DEFINED_SYMBOLS if user_defined_symbols is None else list(user_defined_symbols)
    if num_threads is None:
        num_threads = max(1, min(16, os.cpu_count() or 1))

    with tempfile.TemporaryDirectory(prefix="cxlnet-spm-") as tmp:
        tmp = Path(tmp)
        text_path = tmp / "input.txt"
        n_lines = 0
        with text_path.open("w", encoding="utf-8") as out:
            for path in map(Path, inputs):
                if not path.is_file():
                    raise CxlnetError(f"{path}: corpus file not found")
                for line in _read_lines(path):
                    if line.strip():
                        out.write(preprocess_text(line, lower=lower) + "\n")
                        n_lines += 1
        if n_lines == 0:
            raise CxlnetError(f"train_vocab: the corpus ({', '.join(map(str, inputs))}) has no non-blank line")
        if seed is not None:
            spm.set_random_generator_seed(int(seed))
        tmp_prefix = tmp / "spm"
        try:
            spm.SentencePieceTrainer.train(
                input=str(text_path),
                model_prefix=str(tmp_prefix),
                model_type="unigram",
                vocab_size=vocab_size,
                character_coverage=character_coverage,
                input_sentence_size=input_sentence_size,
                shuffle_input_sentence=shuffle,
                num_threads=num_threads,
                unk_id=0,
                bos_id=1,
                eos_id=2,
                pad_id=-1,
                control_symbols=control,
                user_defined_symbols=user,
                minloglevel=2,
            )
        except RuntimeError as err:
            match = _TOO_BIG.search(str(err))
            if match:
                raise CxlnetError(
                    f"vocab_size {vocab_size} is too large for this corpus ({n_lines} lines); "
                    f"the largest size that works is {match.group(1)}"
                ) from None
            match = _TOO_SMALL.search(str(err))
            if match:
                raise CxlnetError(
                    f"vocab_size {vocab_size} is smaller than the {match.group(2)} characters needed for "
                    f"character_coverage {character_coverage}; raise vocab_size or lower character_coverage"
                ) from None
            raise CxlnetError(f"SentencePiece training failed: {str(err).strip().splitlines()[-1]}") from None
        model_tmp = tmp_prefix.with_suffix(".model")
        if check_layout:
            Tokenizer(model_tmp)  # raises CxlnetError on a wrong special-id layout
        model_bytes = model_tmp.read_bytes()
        vocab_bytes = tmp_prefix.with_suffix(".vocab").read_bytes()
    model_path = Path(f"{model_prefix}.model")
    atomic_write_bytes(Path(f"{model_prefix}.vocab"), vocab_bytes)
    atomic_write_bytes(model_path, model_bytes)
    return model_path
