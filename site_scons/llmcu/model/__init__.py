"""The model side: llama2.c checkpoints and tokenizers, presets and downloads, quantization (fits, calibration,
the disk cache), the KV cache types, and the numpy reference, oracle, sampler and quality measures that define
the arithmetic every C build must reproduce. Knows nothing of targets or builds.
"""
