"""The llama2.c tokenizer: file format, run.c's encoder and decoder, the printable filter."""

from __future__ import annotations

import functools
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import find_model_file
from llmcu.core.errors import TokenizerError
from llmcu.model.tokenizer import (
    BOS,
    EOS,
    Tokenizer,
    code_point_chunks,
    parse_tokenizer,
    printable,
    read_tokenizer,
    sorted_order,
    write_tokenizer,
)


@functools.cache
def _load(name: str) -> Tokenizer | None:
    path = find_model_file(name)
    return None if path is None else read_tokenizer(path)


def _tok(name: str) -> Tokenizer:
    tok = _load(name)
    if tok is None:
        pytest.skip(f"{name} not found (set LLMCU_MODELS)")
    return tok


def _tiny(merges: dict[bytes, float], extra: tuple[bytes, ...] = (b" ", b"a", b"b", b"c")) -> Tokenizer:
    """A hand-made vocabulary: specials, 256 byte tokens, single characters (score 0), then merges."""
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [f"<0x{b:02X}>".encode() for b in range(256)]
    pieces += list(extra) + list(merges)
    scores = [0.0] * (len(pieces) - len(merges)) + list(merges.values())
    return Tokenizer(pieces, np.array(scores, dtype=np.float32), max(len(p) for p in pieces))


def _file(max_len: int, records: list[tuple[float, bytes]]) -> bytes:
    out = struct.pack("<i", max_len)
    for score, piece in records:
        out += struct.pack("<fi", score, len(piece)) + piece
    return out


# --- file format -------------------------------------------------------------------------------------------


def test_reads_tok512(tok512: Path) -> None:
    tok = read_tokenizer(tok512, vocab_size=512)
    assert tok.vocab_size == 512
    assert tok.max_token_length == 7
    assert tok.pieces[:3] == [b"<unk>", b"\n<s>\n", b"\n</s>\n"]
    assert tok.pieces[3] == b"<0x00>" and tok.pieces[258] == b"<0xFF>"
    assert tok.scores.dtype == np.float32


def test_reads_llama_tokenizer() -> None:
    tok = _tok("tokenizer.bin")
    assert tok.vocab_size == 32000
    assert tok.max_token_length == 27
    assert max(len(p) for p in tok.pieces) <= tok.max_token_length


@pytest.mark.fault(
    area="tokenizer",
    kind="input",
    what="Llama 2's 32000-token tokenizer.bin for a 512-token model (stories260K)",
    sees=r"tokenizer has 32000 tokens but the model's vocab_size is 512; .*tok512\.bin, as for stories260K",
)
def test_vocab_size_mismatch_names_the_fix(sees) -> None:
    path = find_model_file("tokenizer.bin")
    if path is None:
        pytest.skip("tokenizer.bin not found")
    with pytest.raises(TokenizerError) as info:
        read_tokenizer(path, vocab_size=512)
    sees(str(info.value))


@pytest.mark.fault(
    area="tokenizer",
    kind="input",
    what="tok512.bin for a 32000-token model (stories15M's shape)",
    sees=r"tok512\.bin: tokenizer has 512 tokens but the model's vocab_size is 32000; .*tokenizer\.bin, Llama 2's",
)
def test_tok512_for_a_32000_token_model(tok512: Path, sees) -> None:
    with pytest.raises(TokenizerError) as info:
        read_tokenizer(tok512, vocab_size=32000)
    sees(str(info.value))


@pytest.mark.fault(
    area="tokenizer",
    kind="input",
    what="tok512.bin for a model with an unusual vocabulary (511 and 513 tokens)",
    sees=r"tokenizer has 512 tokens but the model's vocab_size is 51[13]; .*one with exactly 51[13] tokens",
)
@pytest.mark.parametrize("vocab_size", [511, 513])
def test_off_by_one_vocab(tok512: Path, sees, vocab_size: int) -> None:
    with pytest.raises(TokenizerError) as info:
        read_tokenizer(tok512, vocab_size=vocab_size)
    sees(str(info.value))


def test_round_trip_is_byte_identical(tok512: Path, tmp_path: Path) -> None:
    tok = read_tokenizer(tok512)
    assert tok.to_bytes() == tok512.read_bytes()
    out = tmp_path / "sub" / "tok.bin"
    write_tokenizer(out, tok)
    assert out.read_bytes() == tok512.read_bytes()
    assert read_tokenizer(out) == tok
    assert not [p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(
            b"",
            "no header",
            marks=pytest.mark.fault(
                area="tokenizer",
                kind="input",
                what="empty tokenizer file",
                sees=r"x\.bin: file is truncated \(0 bytes, no header\)",
            ),
        ),
        pytest.param(
            b"\x07\x00",
            "no header",
            marks=pytest.mark.fault(
                area="tokenizer",
                kind="input",
                what="tokenizer cut inside max_token_length (2 bytes)",
                sees=r"file is truncated \(2 bytes, no header\)",
            ),
        ),
        pytest.param(
            struct.pack("<i", 7),
            "no tokens",
            marks=pytest.mark.fault(
                area="tokenizer",
                kind="input",
                what="tokenizer with a header and no tokens",
                sees=r"the file holds no tokens",
            ),
        ),
        pytest.param(
            struct.pack("<i", 0) + struct.pack("<fi", 0.0, 0),
            "max_token_length",
            marks=pytest.mark.fault(
                area="tokenizer",
                kind="input",
                what="max_token_length 0",
                sees=r"invalid max_token_length 0 in the header",
            ),
        ),
        pytest.param(
            _file(4, [(0.0, b"ab"), (1.0, b"cd")])[:-1],
            "truncated inside token 1",
            marks=pytest.mark.fault(
                area="tokenizer",
                kind="input",
                what="tokenizer cut inside the last token's bytes",
                sees=r"file is truncated inside token 1 \(needs 2 bytes at offset \d+, has 1\)",
            ),
        ),
        pytest.param(
            _file(4, [(0.0, b"ab")]) + b"\x01\x02\x03",
            "stray bytes",
            marks=pytest.mark.fault(
                area="tokenizer",
                kind="input",
                what="3 stray bytes after the last token (a record cut inside its score/length)",
                sees=r"3 stray bytes at offset 14 after token 0 \(the file is truncated or has trailing garbage\)",
            ),
        ),
        pytest.param(
            _file(4, [(0.0, b"ab")]) + struct.pack("<fi", 0.0, -1),
            "length -1",
            marks=pytest.mark.fault(
                area="tokenizer",
                kind="input",
                what="token length -1",
                sees=r"token 1 has length -1, outside 0\.\.4 \(corrupt file, or not a llama2\.c tokenizer\)",
            ),
        ),
        pytest.param(
            _file(2, [(0.0, b"abc")]),
            "length 3, outside 0..2",
            marks=pytest.mark.fault(
                area="tokenizer",
                kind="input",
                what="token longer than max_token_length",
                sees=r"token 0 has length 3, outside 0\.\.2",
            ),
        ),
        pytest.param(
            _file(4, [(float("nan"), b"ab")]),
            "NaN",
            marks=pytest.mark.fault(
                area="tokenizer", kind="input", what="NaN merge score", sees=r"token 0 has a NaN score"
            ),
        ),
        pytest.param(
            struct.pack("<i", -5) + bytes(8),
            "max_token_length",
            marks=pytest.mark.fault(
                area="tokenizer",
                kind="input",
                what="negative max_token_length",
                sees=r"invalid max_token_length -5 in the header",
            ),
        ),
        pytest.param(
            _file((1 << 31) - 1, [(0.0, b"ab")]) + struct.pack("<fi", 0.0, (1 << 31) - 1),
            "truncated inside token 1",
            marks=pytest.mark.fault(
                area="tokenizer",
                kind="input",
                what="token length INT_MAX in a tiny file (nothing allocated for it)",
                sees=r"file is truncated inside token 1 \(needs 2147483647 bytes",
            ),
        ),
    ],
)
def test_malformed_files_are_rejected(sees, data: bytes, message: str) -> None:
    with pytest.raises(TokenizerError, match=message) as info:
        parse_tokenizer(data, source="x.bin")
    sees(str(info.value))


@pytest.mark.fault(
    area="tokenizer",
    kind="input",
    what="tok512.bin cut 1, 5, 100 bytes and half its size short of its end",
    sees=r"cut\.bin: (file is truncated inside token \d+|\d+ stray bytes at offset|tokenizer has \d+ tokens but)",
)
def test_truncated_real_file(tok512: Path, tmp_path: Path, sees) -> None:
    data = tok512.read_bytes()
    for cut in (1, 5, 100, len(data) // 2):
        path = tmp_path / "cut.bin"
        path.write_bytes(data[:-cut])
        with pytest.raises(TokenizerError, match=str(path)) as info:
            read_tokenizer(path, vocab_size=512)
        sees(str(info.value))


@pytest.mark.fault(
    area="tokenizer",
    kind="input",
    what="tokenizer path that does not exist, and a directory",
    sees=r"cannot read tokenizer .*: (No such file or directory|Is a directory)",
)
def test_missing_file(tmp_path: Path, sees) -> None:
    for path in (tmp_path / "nope.bin", tmp_path):
        with pytest.raises(TokenizerError, match="cannot read tokenizer") as info:
            read_tokenizer(path)
        sees(str(info.value))


@pytest.mark.fault(
    area="tokenizer",
    kind="input",
    what="the checkpoint (stories260K.bin) given as the tokenizer",
    sees=r"stories260K\.bin: (token \d+ has length -?\d+, outside|file is truncated inside token|token \d+ has a NaN)",
)
def test_checkpoint_is_not_a_tokenizer(stories260k: Path, sees) -> None:
    with pytest.raises(TokenizerError) as info:
        read_tokenizer(stories260k, vocab_size=512)
    sees(str(info.value))


TOK_FILE = _file(6, [(0.0, b"<unk>"), (0.0, b" "), (-1.0, b"ab"), (2.5, b"abc"), (1.0, b"")] * 3)


@settings(max_examples=80, deadline=None)
@given(cut=st.integers(0, len(TOK_FILE) - 1))
def test_any_truncation_is_a_tokenizer_error(cut: int) -> None:
    # with the model's vocab_size, a file cut anywhere (even between two records) is refused
    with pytest.raises(TokenizerError):
        parse_tokenizer(TOK_FILE[:cut], vocab_size=15)


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(max_size=300),
    flips=st.lists(st.tuples(st.integers(0, len(TOK_FILE) - 1), st.integers(0, 255)), max_size=4),
)
def test_random_and_corrupted_files_parse_or_fail_cleanly(data: bytes, flips: list[tuple[int, int]]) -> None:
    corrupted = bytearray(TOK_FILE)
    for at, value in flips:
        corrupted[at] = value
    for candidate in (data, bytes(corrupted)):
        try:
            tok = parse_tokenizer(candidate)
        except TokenizerError:
            continue
        # what parses is a consistent vocabulary that writes back to the same bytes
        assert tok.to_bytes() == candidate
        assert all(len(piece) <= tok.max_token_length for piece in tok.pieces)


# --- encoder -----------------------------------------------------------------------------------------------


def test_encode_known_prompts(tok512: Path) -> None:
    tok = read_tokenizer(tok512)
    ids = tok.encode("Once upon a time", bos=True, eos=False)
    assert ids == [1, 403, 407, 261, 378]
    assert [tok.pieces[i] for i in ids[1:]] == [b" Once", b" upon", b" a", b" time"]
    assert tok.encode("", bos=True, eos=False) == [BOS]
    assert tok.encode("", bos=False, eos=False) == []
    assert tok.encode("hi", bos=True, eos=True)[-1] == EOS


def test_encode_llama_tokenizer() -> None:
    tok = _tok("tokenizer.bin")
    assert tok.encode("Hello world", bos=True, eos=False) == [1, 15043, 3186]
    ids = tok.encode("Once upon a time, there was a dragon.", bos=True, eos=True)
    assert ids[0] == BOS and ids[-1] == EOS
    assert tok.decode_all(ids[1:-1]) == b" Once upon a time, there was a dragon."


def test_byte_fallback(tok512: Path) -> None:
    tok = read_tokenizer(tok512)
    emoji = "😀".encode()
    assert tok.lookup(emoji) is None
    ids = tok.encode("😀", bos=False, eos=False)
    assert ids == [tok.lookup(b" ")] + [b + 3 for b in emoji]
    # characters absent from the vocabulary fall back to bytes, the rest merge normally
    text = "é😀 ok"
    ids = tok.encode(text, bos=False, eos=False)
    assert tok.decode_all(ids) == b" " + text.encode()
    assert all(b + 3 in ids for b in emoji)


def test_text_ends_at_nul(tok512: Path) -> None:
    tok = read_tokenizer(tok512)
    assert tok.encode("ab\0cd", bos=True, eos=False) == tok.encode("ab", bos=True, eos=False)
    assert tok.encode("\0cd", bos=True, eos=False) == [BOS]


def test_code_point_chunks() -> None:
    assert code_point_chunks("aé😀".encode()) == [b"a", "é".encode(), "😀".encode()]
    # stray continuation bytes start a chunk; a chunk never exceeds 4 bytes
    assert code_point_chunks(b"\x80\x80a") == [b"\x80\x80", b"a"]
    assert code_point_chunks(b"\xf0\x80\x80\x80\x80\x80") == [b"\xf0\x80\x80\x80", b"\x80\x80"]


def test_equal_scores_merge_leftmost_first() -> None:
    tok = _tiny({b"aa": 0.0})
    aa, a = tok.lookup(b"aa"), tok.lookup(b"a")
    assert tok.encode("aaa", bos=False, eos=False) == [tok.lookup(b" "), aa, a]


def test_higher_score_wins_wherever_it_is() -> None:
    tok = _tiny({b"ab": -1.0, b"bc": 0.0})
    ids = tok.encode("abc", bos=False, eos=False)
    assert ids == [tok.lookup(b" "), tok.lookup(b"a"), tok.lookup(b"bc")]


def test_merges_chain_and_stop_at_the_floor() -> None:
    tok = _tiny({b"ab": 0.0, b" ab": -1.0, b"abc": -2.0, b" abc": -3e10})
    ids = tok.encode("abc", bos=False, eos=False)
    # " ab" (-1) beats "abc" (-2); " abc" scores below run.c's -1e10 floor and never merges
    assert ids == [tok.lookup(b" ab"), tok.lookup(b"c")]


@pytest.mark.fault(
    area="tokenizer",
    kind="input",
    what="a vocabulary without the ' ' piece, used to encode a prompt",
    sees=r"the tokenizer has no ' ' piece, which run\.c's encoder uses as dummy prefix",
)
def test_missing_dummy_prefix_is_an_error(sees) -> None:
    tok = _tiny({}, extra=(b"a",))
    with pytest.raises(TokenizerError, match="dummy prefix") as info:
        tok.encode("a", bos=False, eos=False)
    sees(str(info.value))


@pytest.mark.fault(
    area="tokenizer",
    kind="input",
    what="a prompt character (é, UTF-8 C3 A9) with no byte-fallback token (a vocabulary of 5 tokens)",
    sees=r"byte 0xC3 is not in the vocabulary and the tokenizer has no byte-fallback token for it \(id 198,",
)
def test_missing_byte_fallback_is_an_error(sees) -> None:
    tok = Tokenizer([b"<unk>", b"<s>", b"</s>", b" ", b"a"], np.zeros(5, np.float32), 5)
    with pytest.raises(TokenizerError) as info:
        tok.encode("a\u00e9", bos=True, eos=False)
    sees(str(info.value))


# --- decoder -----------------------------------------------------------------------------------------------


@pytest.mark.fault(
    area="tokenizer",
    kind="input",
    what="decoding token id 512 (and -1) with a 512-token vocabulary",
    sees=r"token id (512|-1) is outside the vocabulary \(0\.\.511\)",
)
def test_decode_out_of_range(tok512: Path, sees) -> None:
    tok = read_tokenizer(tok512)
    for token in (512, -1):
        with pytest.raises(TokenizerError) as info:
            tok.decode(1, token)
        sees(str(info.value))


def test_decode(tok512: Path) -> None:
    tok = read_tokenizer(tok512)
    once = tok.lookup(b" Once")
    assert once is not None
    assert tok.decode(BOS, once) == b"Once"
    assert tok.decode(5, once) == b" Once"
    assert tok.decode(5, 0x0A + 3) == b"\n"
    assert tok.decode(5, 0xE9 + 3) == b"\xe9"
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        tok.decode(1, 512)


def test_decode_byte_pieces_need_the_exact_form() -> None:
    tok = _tiny({}, extra=(b" ", b"<0x41>x", b"<0xa>", b"<0xab>"))
    assert tok.decode(0, tok.lookup(b"<0x41>x")) == b"<0x41>x"
    assert tok.decode(0, tok.lookup(b"<0xa>")) == b"<0xa>"
    assert tok.decode(0, tok.lookup(b"<0xab>")) == b"\xab"


@pytest.mark.parametrize(
    ("piece", "expected"),
    [
        (b"", b""),
        (b"a", b"a"),
        (b" ", b" "),
        (b"\n", b"\n"),
        (b"\t", b"\t"),
        (b"\r", b"\r"),
        (b"\x0b", b"\x0b"),
        (b"\x0c", b"\x0c"),
        (b"~", b"~"),
        (b"\x02", b""),
        (b"\x03", b""),
        (b"\x1e", b""),
        (b"\x7f", b""),
        (b"\x80", b""),
        (b"\xff", b""),
        (b"\x00", b""),
        (b"\xc3\xa9", b"\xc3\xa9"),
        (b"\x02\x03", b"\x02\x03"),
        (b"ab\x00cd", b"ab"),
        (b"\x02\x00x", b""),
    ],
)
def test_printable(piece: bytes, expected: bytes) -> None:
    assert printable(piece) == expected


def test_sorted_order(tok512: Path) -> None:
    tok = read_tokenizer(tok512)
    order = sorted_order(tok)
    assert sorted(order) == list(range(tok.vocab_size))
    keys = [tok.pieces[i] for i in order]
    assert keys == sorted(keys)
    assert keys.index(b" ") < keys.index(b" a")  # a prefix sorts before its extensions


def test_sorted_order_puts_lowest_duplicate_first() -> None:
    tok = _tiny({}, extra=(b" ", b"a", b"a"))
    first, second = len(tok.pieces) - 2, len(tok.pieces) - 1
    order = sorted_order(tok)
    assert order.index(first) + 1 == order.index(second)
    assert tok.lookup(b"a") == first


# --- properties --------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=60))
def test_encode_decode_round_trip_tok512(text: str) -> None:
    _check_round_trip(_tok("tok512.bin"), text.encode("utf-8"))


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=60))
def test_encode_decode_round_trip_llama(text: str) -> None:
    _check_round_trip(_tok("tokenizer.bin"), text.encode("utf-8"))


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=40))
def test_encode_never_fails_on_invalid_utf8(data: bytes) -> None:
    _check_round_trip(_tok("tok512.bin"), data)


def _check_round_trip(tok: Tokenizer, data: bytes) -> None:
    ids = tok.encode(data, bos=True, eos=True)
    assert ids[0] == BOS and ids[-1] == EOS
    assert all(0 <= i < tok.vocab_size for i in ids)
    text = data.split(b"\0", 1)[0]
    expected = b" " + text if text else b""
    assert tok.decode_all(ids[1:-1]) == expected
