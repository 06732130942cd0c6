"""Copy browser assets out of their npm packages into the package, or check the copies.

`python web/vendor.py copy` and `python web/vendor.py check` (make vendor, make vendor-check).
Both fetch the tarball of each version pinned in web/package-lock.json with `npm pack`,
verify it against the lock's sha512 integrity, and read the files named in VENDORED from
it: htmx for the console (src/tocsin/web/static/), Swagger UI for /api/v1/docs
(src/tocsin/api/docs_assets/). `copy` writes them, `check` fails unless every committed
copy is that file byte for byte. The copies are committed, so `make serve` needs no npm
and the API docs load without internet.
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
PACKAGE_ROOT = ROOT / "src" / "tocsin"
SWAGGER = PACKAGE_ROOT / "api" / "docs_assets"
# npm package -> (file in its tarball, committed copy)
VENDORED = {
    "htmx.org": [("package/dist/htmx.min.js", PACKAGE_ROOT / "web" / "static" / "htmx.min.js")],
    "swagger-ui-dist": [
        ("package/swagger-ui-bundle.js", SWAGGER / "swagger-ui-bundle.js"),
        ("package/swagger-ui.css", SWAGGER / "swagger-ui.css"),
        ("package/favicon-32x32.png", SWAGGER / "favicon-32x32.png"),
        ("package/LICENSE", SWAGGER / "LICENSE"),
    ],
}


def pinned(package: str) -> tuple[str, str]:
    """The version and integrity (`sha512-<base64>`) the lock pins for a package."""
    entry = json.loads(LOCK.read_text())["packages"][f"node_modules/{package}"]
    return entry["version"], entry["integrity"]


def verified_files(package: str, members: list[str]) -> list[bytes]:
    """Those files of the pinned tarball, once its digest matches the lock."""
    version, integrity = pinned(package)
    algorithm, _, expected = integrity.partition("-")
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run(
            ["npm", "pack", f"{package}@{version}", "--pack-destination", folder, "--silent"],
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
            return [read(archive, tarball.name, member) for member in members]


def read(archive: tarfile.TarFile, name: str, member: str) -> bytes:
    found = archive.extractfile(member)
    if found is None:
        sys.exit(f"{name} holds no {member}")
    return found.read()


def main(command: str) -> None:
    stale = []
    for package, files in VENDORED.items():
        version, _ = pinned(package)
        wanted = verified_files(package, [member for member, _ in files])
        for (member, copy), content in zip(files, wanted, strict=True):
            where = copy.relative_to(ROOT)
            if command == "copy":
                copy.parent.mkdir(parents=True, exist_ok=True)
                copy.write_bytes(content)
                print(f"copied {package} {version} {member} to {where}")
            elif not copy.exists() or copy.read_bytes() != content:
                stale.append(f"{where} is not {package} {version}'s {member}")
            else:
                print(f"{where} is {package} {version} as the lock pins it")
    if stale:
        sys.exit("; ".join(stale) + " as pinned in web/package-lock.json: run `make vendor`")


if __name__ == "__main__":
    if sys.argv[1:] not in (["copy"], ["check"]):
        sys.exit("usage: python web/vendor.py copy|check")
    main(sys.argv[1])
