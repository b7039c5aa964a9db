"""An independent producer of update repositories: python-tuf's Metadata API (the reference
implementation of TUF), not our `model-image repo`. The appliance must verify what it writes.

Usage: tuf_repo.py REPO_DIR IMAGE... [--claim-model NAME] [--timestamp-expires SECONDS]

Creates fresh ed25519 keys (one per top-level role, threshold 1), and in REPO_DIR:
  metadata/1.root.json, root.json, 1.targets.json, 1.snapshot.json, timestamp.json
  targets/<sha256>.<model>-r<release>.img      (consistent snapshots)
Each target's custom metadata (model, version, release) is read from the image's own manifest,
unless --claim-model says otherwise (a deliberately mislabelled image, for tests). Prints one
JSON object: {"root": path of root.json, "targets": [names]}.
"""

import argparse
import json
import shutil
import struct
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

MAGIC = b"APMODEL\0"


def manifest_of(image: Path) -> dict:
    """The image's manifest: magic, u16 BE container version, u32 BE length, JSON."""
    with image.open("rb") as f:
        header = f.read(14)
        if header[:8] != MAGIC:
            raise SystemExit(f"{image}: not a model image")
        (length,) = struct.unpack(">I", header[10:14])
        return json.loads(f.read(length))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("repo")
    p.add_argument("images", nargs="+")
    p.add_argument("--claim-model")
    p.add_argument("--timestamp-expires", type=int, default=7 * 86400)
    args = p.parse_args()

    repo = Path(args.repo)
    (repo / "metadata").mkdir(parents=True, exist_ok=True)
    (repo / "targets").mkdir(parents=True, exist_ok=True)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    signers = {role: CryptoSigner.generate_ed25519() for role in ("root", "targets", "snapshot", "timestamp")}

    root = Root(expires=now + timedelta(days=365), consistent_snapshot=True)
    for role, signer in signers.items():
        root.add_key(signer.public_key, role)
    targets = Targets(expires=now + timedelta(days=90))
    names = []
    for image in map(Path, args.images):
        manifest = manifest_of(image)
        name = f"{manifest['name']}-r{manifest['release']}.img"
        target = TargetFile.from_file(name, str(image))
        target.unrecognized_fields["custom"] = {
            "model": args.claim_model or manifest["name"],
            "version": manifest["version"],
            "release": manifest["release"],
        }
        targets.targets[name] = target
        shutil.copyfile(image, repo / "targets" / f"{target.hashes['sha256']}.{name}")
        names.append(name)
    snapshot = Snapshot(expires=now + timedelta(days=30))
    snapshot.meta["targets.json"] = MetaFile(version=targets.version)
    timestamp = Timestamp(expires=now + timedelta(seconds=args.timestamp_expires))
    timestamp.snapshot_meta = MetaFile(version=snapshot.version)

    serializer = JSONSerializer(compact=False)
    for role, signed, file in (
        ("root", root, f"{root.version}.root.json"),
        ("targets", targets, f"{targets.version}.targets.json"),
        ("snapshot", snapshot, f"{snapshot.version}.snapshot.json"),
        ("timestamp", timestamp, "timestamp.json"),
    ):
        md = Metadata(signed)
        md.sign(signers[role])
        md.to_file(str(repo / "metadata" / file), serializer)
    shutil.copyfile(repo / "metadata" / "1.root.json", repo / "metadata" / "root.json")
    print(json.dumps({"root": str(repo / "metadata" / "root.json"), "targets": names}))


if __name__ == "__main__":
    sys.exit(main())
