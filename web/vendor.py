"""Copy htmx out of its npm package into the console's static folder, or check the copy.

`python web/vendor.py copy` and `python web/vendor.py check` (make vendor, make vendor-check).
Both fetch the tarball of the version pinned in web/package-lock.json with `npm pack`,
verify it against the lock's sha512 integrity, and read dist/htmx.min.js from it: `copy`
writes it to src/tocsin/web/static/, `check` fails unless the committed copy is that file
byte for byte. The copy is committed, so `make serve` needs no npm.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "web" / "package-lock.json"
PACKAGE = "htmx.org"
MEMBER = "package/dist/htmx.min.js"
COPY = ROOT / "src" / "tocsin" / "web" / "static" / "htmx.min.js"


def pinned() -> tuple[str, str]:
    """The version and integrity (`sha512-<base64>`) the lock pins for htmx."""
    entry = json.loads(LOCK.read_text())["packages"][f"node_modules/{PACKAGE}"]
    return entry["version"], entry["integrity"]


def verified_file() -> bytes:
    """dist/htmx.min.js from the pinned tarball, once its digest matches the lock."""
    version, integrity = pinned()
    algorithm, _, expected = integrity.partition("-")
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run(
            ["npm", "pack", f"{PACKAGE}@{version}", "--pack-destination", folder, "--silent"],
            check=True,
            capture_output=True,
            text=True,
            cwd=folder,
        )
        tarball = Path(folder) / done.stdout.strip().splitlines()[-1]
        digest = base64.b64encode(hashlib.new(algorithm, tarball.read_bytes()).digest()).decode()
        if digest != expected:
            sys.exit(f"{tarball.name}: {algorithm} {digest} is not the lock's {expected}")
        with tarfile.open(tarball) as archive:
            member = archive.extractfile(MEMBER)
            if member is None:
                sys.exit(f"{tarball.name} holds no {MEMBER}")
            return member.read()


def main(command: str) -> None:
    version, _ = pinned()
    wanted = verified_file()
    if command == "copy":
        COPY.write_bytes(wanted)
        print(f"copied {PACKAGE} {version} dist/htmx.min.js to {COPY.relative_to(ROOT)}")
    elif not COPY.exists() or COPY.read_bytes() != wanted:
        sys.exit(
            f"{COPY.relative_to(ROOT)} is not {PACKAGE} {version}'s dist/htmx.min.js "
            "as pinned in web/package-lock.json: run `make vendor`"
        )
    else:
        print(f"{COPY.relative_to(ROOT)} is {PACKAGE} {version} as the lock pins it")


if __name__ == "__main__":
    if sys.argv[1:] not in (["copy"], ["check"]):
        sys.exit("usage: python web/vendor.py copy|check")
    main(sys.argv[1])
