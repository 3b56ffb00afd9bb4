"""The shape of a Llama-2 model as llama2.c describes it, and the names of its tensors."""

from __future__ import annotations

from dataclasses import dataclass

# Tensor names and their order in a llama2.c legacy (v0) checkpoint. Per-layer tensors are stacked
# along a leading layer axis. Shapes are (out_features, in_features), as run.c's matmul reads them.
LAYER_MATRICES = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")
MATRIX_KINDS = ("tok_embeddings", *LAYER_MATRICES, "wcls")
NORM_NAMES = ("rms_att", "rms_ffn", "rms_final")


@dataclass(frozen=True)
class ModelConfig:
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int
    shared_classifier: bool = True
    # Not in llama2.c's header, which means run.c's constants; GGUF and Hugging Face models carry their own.
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    @property
    def head_size(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_size

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor's shape, in llama2.c v0 file order (``wcls`` only when not shared)."""
        d, h, n, kv, v = self.dim, self.hidden_dim, self.n_layers, self.kv_dim, self.vocab_size
        shapes: dict[str, tuple[int, ...]] = {
            "tok_embeddings": (v, d),
            "rms_att": (n, d),
            "wq": (n, d, d),
            "wk": (n, kv, d),
            "wv": (n, kv, d),
            "wo": (n, d, d),
            "rms_ffn": (n, d),
            "w1": (n, h, d),
            "w2": (n, d, h),
            "w3": (n, h, d),
            "rms_final": (d,),
        }
        if not self.shared_classifier:
            shapes["wcls"] = (v, d)
        return shapes

    def parameter_count(self) -> int:
        total = 0
        for shape in self.tensor_shapes().values():
            count = 1
            for extent in shape:
                count *= extent
            total += count
        return total
