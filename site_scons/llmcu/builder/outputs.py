"""The files a build generates from the model, and a manifest that says they are still what was generated.

SCons rebuilds a target when its sources change, not when the target itself is changed behind its back: a
``model.bin`` cut short by a full disk or a copy, or a generated source edited by hand, would be trusted by every
later build (and a weights file is only checked by the program when it runs). After generating, the build writes
``gen/generated.json`` (each file's size, mtime and sha256); before SCons looks at anything,
:func:`discard_changed` compares the files with it (the hash only where size or mtime moved) and removes the whole
set when one differs, so that it is generated again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..core.fileio import write_text_atomic
from . import codegen, weightsfile
from .settings import BuildSettings

MANIFEST = "generated.json"


def generated_files(settings: BuildSettings) -> list[Path]:
    """Every file the model's generation step writes for this build."""
    files = [settings.gen_dir / name for name in codegen.GENERATED_FILES]
    files += [settings.out_dir / "quant_report.json", settings.out_dir / "quant_report.md"]
    files += [image.linker_script for image in settings.images]
    if settings.images and settings.board:
        files.append(settings.gen_dir / "board_config.h")
    if settings.weights_file:
        files.append(settings.out_dir / weightsfile.FILE_NAME)
    return files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _record(path: Path) -> dict[str, object]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": _sha256(path)}


def write_manifest(settings: BuildSettings) -> None:
    """Record what was just generated (called last by the generation step)."""
    entries = {str(path.relative_to(settings.out_dir)): _record(path) for path in generated_files(settings)}
    write_text_atomic(settings.gen_dir / MANIFEST, json.dumps(entries, indent=1, sort_keys=True) + "\n")


def changed(settings: BuildSettings) -> list[str]:
    """The generated files that are missing or no longer what was generated ([] without a manifest)."""
    try:
        entries = json.loads((settings.gen_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return []
    out = []
    for name, entry in sorted(entries.items()):
        path = settings.out_dir / name
        try:
            stat = path.stat()
        except OSError:
            out.append(f"{name} is missing")
            continue
        if stat.st_size != entry.get("size"):
            out.append(f"{name} is {stat.st_size:,} bytes, not the {entry.get('size', 0):,} generated")
        elif stat.st_mtime_ns != entry.get("mtime_ns") and _sha256(path) != entry.get("sha256"):
            out.append(f"{name} was changed since it was generated")
    return out


def discard_changed(settings: BuildSettings) -> list[str]:
    """Remove every generated file (and the manifest) when one of them changed; returns what changed."""
    what = changed(settings)
    if what:
        for path in [*generated_files(settings), settings.gen_dir / MANIFEST]:
            path.unlink(missing_ok=True)
    return what
