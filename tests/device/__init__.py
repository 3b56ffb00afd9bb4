"""Tests of llmcu.device: the protocol, console, UART capture, logs, flashing, the QEMU twins, SSH, self-test."""
