"""Build localdicom as one executable file: ``python -m localdicom.freeze [--out DIR]``.

PyInstaller's one-file mode (``pip install '.[binary]'``): the file holds a Python
interpreter, localdicom, its dependencies and their shared libraries, and unpacks them into
a temporary folder at each launch. It was chosen over Nuitka's onefile mode, which compiles
every module to C (a build that did not finish in half an hour on the 2-core machine, against
PyInstaller's minute), and PyOxidizer, no longer maintained (README, "One file to run").

What the analysis of imports cannot see is named here:

- the pylibjpeg plugins, found through their entry points (package metadata), and the
  decoders pydicom imports by name (``pydicom.pixels.decoders.*``, PyInstaller's pydicom hook);
- the modules the worker processes' forkserver imports by name (``workers.PRELOAD``): every
  module of localdicom is collected;
- the package's data files (the home page in localdicom/static) and the tutorial's samples
  (outside the package in a checkout), placed where ``web/home.py`` and ``samples.py`` look
  for them, beside their own modules.

pylibjpeg-libjpeg (GPL-3.0, the ``gpl-codecs`` extra) is left out even where it is
installed: the executable stays as free of copyleft as the default install.

The multiprocessing helpers (the forkserver, the resource tracker, spawned processes) are the
executable started again with Python's arguments; its main program (localdicom/frozen.py)
calls ``multiprocessing.freeze_support()`` first, which PyInstaller's runtime hook turns into
running the helper instead of the command line.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

#: The executable's main script (localdicom/frozen.py says what it does first).
ENTRY = "from localdicom.frozen import main\n\nmain()\n"

PACKAGE = Path(__file__).resolve().parent
NAME = "localdicom"
#: Distributions whose metadata is read at run time: pylibjpeg finds its plugins by entry
#: point, and ``--version`` names the versions.
METADATA = [
    "pylibjpeg",
    "pylibjpeg-openjpeg",
    "pylibjpeg-rle",
    "pydicom",
    "pynetdicom",
    "python-gdcm",
    "pyjpegls",
    "pillow",
    "numpy",
]
#: Imported by name only (entry points, pydicom's plugin table).
HIDDEN = ["openjpeg", "rle", "jpeg_ls", "gdcm"]
#: GPL-3.0 (pylibjpeg-libjpeg); then what optional imports of the dependencies would bring
#: from a development environment (Tk, cryptography, pydantic: 20 MiB) and the server never
#: imports.
EXCLUDED = ["libjpeg", "_libjpeg"]
EXCLUDED += ["tkinter", "_tkinter", "PIL.ImageTk", "PIL.ImageQt", "cryptography", "pydantic"]
EXCLUDED += ["pydantic_core", "yaml", "pytest", "hypothesis", "playwright", "IPython"]
#: Pillow's AVIF plugin (5 MB of libavif): localdicom writes JPEG and PNG only.
EXCLUDED += ["PIL.AvifImagePlugin", "PIL._avif"]


def pyinstaller_arguments(out: Path, work: Path) -> list[str]:
    """PyInstaller's command line for the one-file build into ``out``, working in ``work``."""
    from localdicom.samples import sample_files

    entry = work / "frozen_main.py"  # not localdicom.py, which would hide the package
    entry.write_text(ENTRY)
    arguments = [
        str(entry),
        "--onefile",
        f"--name={NAME}",
        f"--distpath={out}",
        f"--workpath={work / 'build'}",
        f"--specpath={work}",
        "--noconfirm",
        "--log-level=WARN",
        f"--paths={PACKAGE.parent}",  # this localdicom, not another one installed
        "--collect-submodules=localdicom",
        "--collect-data=localdicom",  # the home page, and any data file a module reads
    ]
    arguments += [f"--add-data={path}{os.pathsep}localdicom/sample_dcms" for path in sample_files()]
    arguments += [f"--copy-metadata={name}" for name in METADATA]
    arguments += [f"--hidden-import={name}" for name in HIDDEN]
    arguments += [f"--exclude-module={name}" for name in EXCLUDED]
    return arguments


def build(out: Path) -> Path:
    """Build the executable into ``out``; its path."""
    try:
        import PyInstaller.__main__ as pyinstaller
    except ImportError:
        sys.exit("PyInstaller is missing: pip install '.[binary]'")
    out = out.resolve()
    with tempfile.TemporaryDirectory(prefix="localdicom-freeze-") as work:
        pyinstaller.run(pyinstaller_arguments(out, Path(work)))
    executable = out / (f"{NAME}.exe" if sys.platform == "win32" else NAME)
    if not executable.is_file():
        sys.exit(f"PyInstaller wrote no {executable}")
    return executable


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m localdicom.freeze", description="Build localdicom as one executable."
    )
    parser.add_argument("--out", type=Path, default=Path("dist"), help="folder (default: dist)")
    executable = build(parser.parse_args(argv).out)
    size = executable.stat().st_size / 2**20
    print(f"{executable} ({size:.0f} MiB)")


if __name__ == "__main__":
    main()
