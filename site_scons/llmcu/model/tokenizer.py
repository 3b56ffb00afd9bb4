"""The llama2.c tokenizer: its file format, run.c's BPE encoder and its decoder.

File format (``tokenizer.bin``, little-endian): ``int32 max_token_length``, then for every token
``float32 score, int32 length, length bytes``. The token count is whatever the file holds.

The encoder and decoder reproduce the behaviour of llama2.c's ``run.c`` exactly (its standard output is
the project's reference), including its quirks: the text is a C string (it ends at the first NUL byte),
a non-empty text gets a dummy-prefix token (the piece ``" "``), and a code point that is not in the
vocabulary falls back to one token per byte (``id = byte + 3``).
"""

from __future__ import annotations

import itertools
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import TokenizerError
from ..core.fileio import write_bytes_atomic

BOS = 1
EOS = 2
BYTE_FALLBACK_OFFSET = 3  # token id of raw byte b is b + 3 (<0x00> is token 3)
MERGE_SCORE_FLOOR = float(np.float32(-1e10))  # run.c's initial best score: no merge at or below it

_BYTE_PIECE = re.compile(rb"<0x([0-9A-Fa-f]{2})>")
_HEADER = struct.Struct("<i")
_RECORD = struct.Struct("<fi")


@dataclass(eq=False)
class Tokenizer:
    """A llama2.c vocabulary: the byte string and merge score of every token id."""

    pieces: list[bytes]
    scores: np.ndarray
    max_token_length: int
    # How a prompt is encoded (GGUF's tokenizer.ggml.add_space_prefix and add_bos_token; llama2.c's tokenizer.bin
    # has neither and run.c does both): a dummy-prefix space before a non-empty text, and BOS first.
    add_space_prefix: bool = True
    add_bos: bool = True
    _lookup: dict[bytes, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float32)
        if len(self.scores) != len(self.pieces):
            raise TokenizerError(f"tokenizer has {len(self.pieces)} pieces but {len(self.scores)} scores")
        lookup: dict[bytes, int] = {}
        for token_id, piece in enumerate(self.pieces):
            lookup.setdefault(piece, token_id)  # duplicates: the lowest id wins (see sorted_order)
        self._lookup = lookup

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tokenizer):
            return NotImplemented
        return (
            self.max_token_length == other.max_token_length
            and (self.add_space_prefix, self.add_bos) == (other.add_space_prefix, other.add_bos)
            and self.pieces == other.pieces
            and self.scores.tobytes() == other.scores.tobytes()
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def lookup(self, piece: bytes) -> int | None:
        """The id of a piece (the lowest id if the piece occurs more than once), or None."""
        return self._lookup.get(piece)

    def encode(self, text: str | bytes, bos: bool, eos: bool) -> list[int]:
        """run.c's ``encode``: BOS, dummy prefix (unless the vocabulary says otherwise), code points with byte
        fallback, BPE merges, EOS."""
        data = _c_string(text)
        tokens: list[int] = [BOS] if bos else []
        if data:
            if self.add_space_prefix:
                tokens.append(self._dummy_prefix())
            tokens.extend(self._initial_tokens(data))
        tokens = self._merge(tokens)
        if eos:
            tokens.append(EOS)
        return tokens

    def encode_prompt(self, text: str | bytes) -> list[int]:
        """A prompt as the runtime encodes it (runtime_c/generate.c): BOS first when the vocabulary asks for it,
        and always for an empty prompt (a run needs a first token)."""
        return self.encode(text, bos=self.add_bos or not _c_string(text), eos=False)

    def decode(self, prev: int, token: int) -> bytes:
        """run.c's ``decode``: the piece of ``token`` as it follows ``prev``.

        After BOS a leading space is dropped; a piece that is exactly ``<0xHH>`` (hex digits in either
        case) stands for that single raw byte.
        """
        if not 0 <= token < self.vocab_size:
            raise TokenizerError(f"token id {token} is outside the vocabulary (0..{self.vocab_size - 1})")
        piece = self.pieces[token]
        if prev == BOS and piece.startswith(b" "):
            piece = piece[1:]
        match = _BYTE_PIECE.fullmatch(piece)
        if match is not None:
            return bytes([int(match.group(1), 16)])
        return piece

    def decode_all(self, tokens: list[int]) -> bytes:
        """The concatenated pieces of a token sequence, each decoded after its predecessor."""
        out = bytearray()
        prev = -1
        for token in tokens:
            out += self.decode(prev, token)
            prev = token
        return bytes(out)

    def _dummy_prefix(self) -> int:
        token_id = self.lookup(b" ")
        if token_id is None:
            raise TokenizerError("the tokenizer has no ' ' piece, which run.c's encoder uses as dummy prefix")
        return token_id

    def _initial_tokens(self, data: bytes) -> list[int]:
        tokens: list[int] = []
        for chunk in code_point_chunks(data):
            token_id = self.lookup(chunk)
            if token_id is not None:
                tokens.append(token_id)
                continue
            for byte in chunk:
                fallback = byte + BYTE_FALLBACK_OFFSET
                if fallback >= self.vocab_size:
                    raise TokenizerError(
                        f"byte 0x{byte:02X} is not in the vocabulary and the tokenizer has no byte-fallback "
                        f"token for it (id {fallback}, vocabulary of {self.vocab_size})"
                    )
                tokens.append(fallback)
        return tokens

    def _pair_score(self, left: int, right: int) -> tuple[float, int]:
        merged = self.lookup(self.pieces[left] + self.pieces[right])
        if merged is None:
            return MERGE_SCORE_FLOOR, -1
        return float(self.scores[merged]), merged

    def _merge(self, tokens: list[int]) -> list[int]:
        """Merge the best-scoring adjacent pair until no pair's concatenation is in the vocabulary.

        A pair wins only with a score strictly greater than the best so far, so the leftmost of equally
        scored pairs merges first; scores at or below -1e10 never merge. Like run.c, pairs that involve
        BOS are looked up too.
        """
        pairs = [self._pair_score(a, b) for a, b in itertools.pairwise(tokens)]
        while pairs:
            best_index = -1
            best_score = MERGE_SCORE_FLOOR
            for index, (score, _) in enumerate(pairs):
                if score > best_score:
                    best_score, best_index = score, index
            if best_index < 0:
                break
            tokens[best_index] = pairs[best_index][1]
            del tokens[best_index + 1]
            del pairs[best_index]
            if best_index > 0:
                pairs[best_index - 1] = self._pair_score(tokens[best_index - 1], tokens[best_index])
            if best_index < len(pairs):
                pairs[best_index] = self._pair_score(tokens[best_index], tokens[best_index + 1])
        return tokens

    def to_bytes(self) -> bytes:
        """The tokenizer in llama2.c's ``tokenizer.bin`` format."""
        _check_lengths(self.pieces, self.max_token_length, "tokenizer")
        parts = [_HEADER.pack(self.max_token_length)]
        for piece, score in zip(self.pieces, self.scores, strict=True):
            parts.append(_RECORD.pack(float(score), len(piece)))
            parts.append(piece)
        return b"".join(parts)


def _c_string(text: str | bytes) -> bytes:
    data = text if isinstance(text, bytes) else text.encode("utf-8", errors="surrogatepass")
    end = data.find(b"\0")
    return data if end < 0 else data[:end]


def code_point_chunks(data: bytes) -> list[bytes]:
    """Split bytes as run.c does: a chunk is one byte plus the continuation bytes (10xxxxxx) that follow
    it, at most 4 bytes in all. Invalid UTF-8 is split the same way, never rejected."""
    chunks: list[bytes] = []
    index = 0
    while index < len(data):
        end = index + 1
        while end < len(data) and end - index < 4 and (data[end] & 0xC0) == 0x80:
            end += 1
        chunks.append(data[index:end])
        index = end
    return chunks


def printable(piece: bytes) -> bytes:
    """run.c's ``safe_printf``: what ``printf("%s", piece)`` prints, minus unprintable single bytes.

    The piece is a C string (it ends at its first NUL). A one-byte piece that is neither printable ASCII
    nor white space (``isprint``/``isspace`` in the C locale) prints nothing.
    """
    end = piece.find(b"\0")
    if end >= 0:
        piece = piece[:end]
    if len(piece) == 1:
        byte = piece[0]
        if not (0x20 <= byte <= 0x7E or 0x09 <= byte <= 0x0D):
            return b""
    return piece


def sorted_order(tok: Tokenizer) -> list[int]:
    """Token ids ordered by their bytes (unsigned bytewise, a prefix before its extensions), ties by id.

    This is the table the C encoder binary-searches; a lower-bound search finds the lowest id of a
    duplicated piece, as :meth:`Tokenizer.lookup` does.
    """
    return sorted(range(tok.vocab_size), key=lambda token_id: (tok.pieces[token_id], token_id))


def _check_lengths(pieces: list[bytes], max_token_length: int, source: str) -> None:
    for token_id, piece in enumerate(pieces):
        if len(piece) > max_token_length:
            raise TokenizerError(
                f"{source}: token {token_id} is {len(piece)} bytes long, more than the max_token_length "
                f"of {max_token_length}"
            )


# The tokenizers of llama2.c's published models, by vocabulary size: what to suggest when the sizes differ.
_KNOWN_TOKENIZERS = {
    512: "tok512.bin, as for stories260K",
    32000: "tokenizer.bin, Llama 2's, as for stories15M/42M/110M",
}


def _tokenizer_hint(vocab_size: int) -> str:
    known = _KNOWN_TOKENIZERS.get(vocab_size)
    if known is not None:
        return f"for a {vocab_size}-token vocabulary: {known}"
    return f"one with exactly {vocab_size} tokens, exported with the model"


def parse_tokenizer(data: bytes, vocab_size: int | None = None, source: str = "tokenizer") -> Tokenizer:
    """Parse ``tokenizer.bin`` bytes; ``source`` names the file in error messages."""
    if len(data) < _HEADER.size:
        raise TokenizerError(f"{source}: file is truncated ({len(data)} bytes, no header)")
    (max_token_length,) = _HEADER.unpack_from(data, 0)
    if max_token_length < 1:
        raise TokenizerError(f"{source}: invalid max_token_length {max_token_length} in the header")
    pieces: list[bytes] = []
    scores: list[float] = []
    offset = _HEADER.size
    while offset < len(data):
        if len(data) - offset < _RECORD.size:
            raise TokenizerError(
                f"{source}: {len(data) - offset} stray bytes at offset {offset} after token "
                f"{len(pieces) - 1} (the file is truncated or has trailing garbage)"
            )
        score, length = _RECORD.unpack_from(data, offset)
        offset += _RECORD.size
        if length < 0 or length > max_token_length:
            raise TokenizerError(
                f"{source}: token {len(pieces)} has length {length}, outside 0..{max_token_length} "
                "(corrupt file, or not a llama2.c tokenizer)"
            )
        if offset + length > len(data):
            raise TokenizerError(
                f"{source}: file is truncated inside token {len(pieces)} "
                f"(needs {length} bytes at offset {offset}, has {len(data) - offset})"
            )
        if np.isnan(score):
            raise TokenizerError(f"{source}: token {len(pieces)} has a NaN score")
        pieces.append(data[offset : offset + length])
        scores.append(score)
        offset += length
    if not pieces:
        raise TokenizerError(f"{source}: the file holds no tokens")
    if vocab_size is not None and len(pieces) != vocab_size:
        raise TokenizerError(
            f"{source}: tokenizer has {len(pieces)} tokens but the model's vocab_size is {vocab_size}; "
            f"use the tokenizer that belongs to this model ({_tokenizer_hint(vocab_size)})"
        )
    return Tokenizer(pieces, np.array(scores, dtype=np.float32), max_token_length)


def read_tokenizer(path: str | os.PathLike[str], vocab_size: int | None = None) -> Tokenizer:
    """Read a llama2.c ``tokenizer.bin``; with ``vocab_size``, check that it matches the model."""
    target = Path(path)
    try:
        data = target.read_bytes()
    except OSError as exc:
        raise TokenizerError(f"cannot read tokenizer {target}: {exc.strerror or exc}") from exc
    return parse_tokenizer(data, vocab_size, source=str(target))


def write_tokenizer(path: str | os.PathLike[str], tok: Tokenizer) -> None:
    """Write ``tok`` in llama2.c's format, atomically."""
    write_bytes_atomic(path, tok.to_bytes())
