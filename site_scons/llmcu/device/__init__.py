"""The device side: the output protocol and the console commands, running programs (host, qemu-user, the QEMU
twin), UART capture, flashing with pyOCD, SSH deploy, run logs, the bring-up self-test's analysis, and `scons run`
(llmcu.device.runs). Uses the build side's settings.
"""
