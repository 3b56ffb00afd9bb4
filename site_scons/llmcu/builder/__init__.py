"""The builder (PlatformIO's word): options and the one settings object they make, the memory planner, code
generation and its templates, weight layouts and weights files, board_config.h, ELF reports, the QSPI flash
algorithm, and the build steps SCons calls (site_scons/site_tools/ only wires these in). Uses the model side and
the platform's hardware facts; runs nothing on a device.
"""
