"""Errors a user can act on. Each message says what is wrong and what to do about it."""


class LlmcuError(Exception):
    """Base class: the build stops with this message and no traceback."""


class CheckpointError(LlmcuError):
    """A checkpoint file is truncated, corrupt or not a llama2.c checkpoint."""


class TokenizerError(LlmcuError):
    """A tokenizer file is malformed or does not match the model."""


class OptionError(LlmcuError):
    """An unknown build option, or a value that is not allowed."""


class ModelNotFoundError(LlmcuError):
    """A model file is neither on disk nor downloadable."""


class DownloadError(LlmcuError):
    """A download failed or its checksum does not match."""


class QuantizationError(LlmcuError):
    """A quantization setting cannot be applied to a tensor."""


class ProtocolError(LlmcuError):
    """A device's output does not follow the llmcu output protocol."""
