"""Verify a TUF repository directory with python-tuf's ngclient, as an
independent client would: `verify_repo.py REPO TRUSTED_ROOT CLIENT_DIR`.

CLIENT_DIR keeps the client's trusted metadata between runs (bootstrapped
from TRUSTED_ROOT on the first), so a second run after a root rotation
walks the chain. Prints the trusted versions and each target's sha256 as
JSON."""

import hashlib
import json
import sys
from pathlib import Path

from tuf.api import exceptions
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface


class FileFetcher(FetcherInterface):
    """file:// URLs; a missing file is a 404 so the root walk stops."""

    def _fetch(self, url):
        path = Path(url.removeprefix("file://"))
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise exceptions.DownloadHTTPError(f"{path} not found", 404)
        return iter([data])


def main():
    repo, trusted_root, client = (Path(a).resolve() for a in sys.argv[1:4])
    client.mkdir(parents=True, exist_ok=True)
    bootstrap = None if (client / "root.json").exists() else trusted_root.read_bytes()
    base = "file://" + str(repo)
    updater = Updater(
        metadata_dir=str(client),
        metadata_base_url=base + "/metadata/",
        target_base_url=base + "/targets/",
        target_dir=str(client),
        fetcher=FileFetcher(),
        bootstrap=bootstrap,
    )
    updater.refresh()
    trusted = updater._trusted_set
    files = {}
    for name in sorted(trusted.targets.targets):
        info = updater.get_targetinfo(name)
        out = client / ("out_" + name.replace("/", "_"))
        updater.download_target(info, filepath=str(out))
        files[name] = hashlib.sha256(out.read_bytes()).hexdigest()
    print(json.dumps({
        "root": trusted.root.version,
        "timestamp": trusted.timestamp.version,
        "snapshot": trusted.snapshot.version,
        "targets": trusted.targets.version,
        "files": files,
    }))


main()
