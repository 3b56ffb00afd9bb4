"""llmcu: put tiny Llama-2 models on microcontrollers and edge SoCs.

The library does all the work (reading checkpoints, quantizing, generating C, planning memory, running and
parsing firmware output) and knows nothing about SCons; ``site_scons/site_tools/llmcu.py`` wires it in.
"""

__version__ = "0.1.0"
