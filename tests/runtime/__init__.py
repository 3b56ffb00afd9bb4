"""Tests of the C runtime and its kernel sets: host builds, kernel harnesses, sanitizers, fuzzing."""
