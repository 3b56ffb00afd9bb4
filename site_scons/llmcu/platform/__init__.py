"""Facts about hardware, read by the builder, the device side, power and HIL: targets (targets/<name>/target.toml),
STM32H7 boards and the chip's limits, the watchdog's timeout rules, deploy destinations and the self-test's
regions. Imports only the core; knows nothing of models or builds.
"""
