"""The build side: options, targets and boards (with the chip's limits), the memory planner, code generation and
its templates, weight layouts and weights files, ELF reports, the QSPI flash algorithm, and the build steps SCons
calls (site_scons/site_tools/ only wires these in). Uses the model side; runs nothing on a device.
"""
