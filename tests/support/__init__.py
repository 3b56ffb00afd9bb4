"""What the tests share and are not tests: scons and program helpers (build), fakes at the hardware boundary
(flash_fakes, flashalgo_emu, mmio_emu, qemu_board, power), model files in other formats (modelfiles), and the fault
catalog's pytest plugin (faultcatalog)."""
