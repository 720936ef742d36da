# A python-tuf (tuf 7.0.1, securesystemslib 1.6.0) repository with a
# target in a subdirectory, signed with PEM keys of four kinds, verified
# by its own client over a local directory: the recipe issue 15's interop
# tests build on. Run in a directory holding keys/{sec1,p8ec,ed,rsa1}.pem.
import os, sys, io, datetime as dt
from pathlib import Path
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Root, Targets, Snapshot, Timestamp, TargetFile, MetaFile
from tuf.api.serialization.json import JSONSerializer
from tuf.ngclient import Updater, UpdaterConfig
from tuf.ngclient.fetcher import FetcherInterface
from tuf.api import exceptions

def signer(p): return CryptoSigner(load_pem_private_key(Path(p).read_bytes(), None))
S = {n: signer(f"keys/{n}.pem") for n in ["sec1","p8ec","ed","rsa1"]}
for n,s in S.items(): print(n, s.public_key.keytype, s.public_key.scheme, s.public_key.keyid[:16])
exp = (dt.datetime.now(dt.timezone.utc)+dt.timedelta(days=7)).replace(microsecond=0)
repo=Path("repo"); (repo/"metadata").mkdir(parents=True); (repo/"targets/attestors").mkdir(parents=True)
(repo/"targets/policy.yaml").write_text("x: 1\n"); (repo/"targets/attestors/ci.yaml").write_text("y: 2\n")
root = Root(expires=exp, consistent_snapshot=False)
roles = {"root":"sec1","targets":"p8ec","snapshot":"ed","timestamp":"rsa1"}
for role,k in roles.items(): root.add_key(S[k].public_key, role)
md = {}
md["root"] = Metadata(root)
t = Targets(expires=exp)
for name in ["policy.yaml","attestors/ci.yaml"]:
    t.targets[name] = TargetFile.from_file(name, str(repo/"targets"/name))
md["targets"] = Metadata(t)
md["snapshot"] = Metadata(Snapshot(expires=exp)); md["timestamp"] = Metadata(Timestamp(expires=exp))
ser = JSONSerializer(compact=False)
for role in ["root","targets","snapshot","timestamp"]:
    m = md[role]; m.sign(S[roles[role]], append=False)
    fn = "1.root.json" if role=="root" else f"{role}.json"
    m.to_file(str(repo/"metadata"/fn), ser)
print((repo/"metadata/1.root.json").read_text()[:900])

class FileFetcher(FetcherInterface):
    def _fetch(self, url):
        p = url.removeprefix("file://")
        try: data = Path(p).read_bytes()
        except FileNotFoundError: raise exceptions.DownloadHTTPError(f"{p} not found", 404)
        return iter([data])
os.makedirs("client", exist_ok=True)
base = "file://" + str(repo.resolve())
u = Updater(metadata_dir="client", metadata_base_url=base+"/metadata/", target_base_url=base+"/targets/",
            target_dir="client", fetcher=FileFetcher(), bootstrap=(repo/"metadata/1.root.json").read_bytes())
u.refresh()
for name in ["policy.yaml","attestors/ci.yaml"]:
    ti = u.get_targetinfo(name); print(name, ti.length, u.download_target(ti, filepath=f"client/out_{name.replace('/','_')}"))
print("timestamp v", u._trusted_set.timestamp.version, "snapshot v", u._trusted_set.snapshot.version)
