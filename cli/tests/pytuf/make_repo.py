"""Build a TUF repository with python-tuf's Metadata API from a bundle
directory: `make_repo.py OUT BUNDLE KEYDIR`, signing root with
KEYDIR/root.pem, targets with targets.pem, snapshot with snapshot.pem and
timestamp with timestamp.pem (PEM keys as openssl writes them).
consistent_snapshot is False, as attestgate's repositories are."""

import datetime as dt
import shutil
import sys
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer


def signer(path):
    return CryptoSigner(load_pem_private_key(Path(path).read_bytes(), None))


def main():
    out, bundle, keydir = (Path(a) for a in sys.argv[1:4])
    roles = ["root", "targets", "snapshot", "timestamp"]
    signers = {role: signer(keydir / f"{role}.pem") for role in roles}
    expires = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=7)).replace(microsecond=0)
    (out / "metadata").mkdir(parents=True)
    root = Root(expires=expires, consistent_snapshot=False)
    for role in roles:
        root.add_key(signers[role].public_key, role)
    targets = Targets(expires=expires)
    names = ["policy.yaml"] + [f"attestors/{p.name}" for p in sorted((bundle / "attestors").glob("*.yaml"))]
    for name in names:
        dest = out / "targets" / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(bundle / name, dest)
        targets.targets[name] = TargetFile.from_file(name, str(dest))
    metadata = {
        "root": Metadata(root),
        "targets": Metadata(targets),
        "snapshot": Metadata(Snapshot(expires=expires)),
        "timestamp": Metadata(Timestamp(expires=expires)),
    }
    serializer = JSONSerializer(compact=False)
    for role in roles:
        metadata[role].sign(signers[role], append=False)
        name = "1.root.json" if role == "root" else f"{role}.json"
        metadata[role].to_file(str(out / "metadata" / name), serializer)


main()
