#!/usr/bin/env python3
"""Builds OCI image layouts from local files, offline.

  make_oci.py image DIR --tag T --layer FILE.tar [--layer ...] [--arch A] [--gzip] [--cmd C]
  make_oci.py index DIR --tag T --image ARCH=DIR:TAG [--image ...]

An image gets one layer per --layer (uncompressed tar unless --gzip), a config with the
layers' diff ids, and a manifest; an index lists images of several platforms. The layout can
then be pushed with `skopeo copy oci:DIR:TAG docker://...`.
"""
import argparse, gzip, hashlib, json, os, shutil, sys

def put_blob(layout, data=None, path=None):
    h = hashlib.sha256()
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    tmp = os.path.join(layout, "blobs", "sha256", ".incoming")
    with open(tmp, "wb") as out:
        if data is not None:
            h.update(data); out.write(data)
        else:
            with open(path, "rb") as src:
                while chunk := src.read(1 << 20):
                    h.update(chunk); out.write(chunk)
    digest = h.hexdigest()
    os.replace(tmp, os.path.join(layout, "blobs", "sha256", digest))
    return "sha256:" + digest, os.path.getsize(os.path.join(layout, "blobs", "sha256", digest))

def file_digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()

def init_layout(layout):
    os.makedirs(layout, exist_ok=True)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)

def add_to_index(layout, desc, tag):
    path = os.path.join(layout, "index.json")
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
    if os.path.exists(path):
        index = json.load(open(path))
    index["manifests"] = [m for m in index["manifests"]
                          if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag]
    d = dict(desc); d["annotations"] = {"org.opencontainers.image.ref.name": tag}
    index["manifests"].append(d)
    json.dump(index, open(path, "w"))

def image(args):
    init_layout(args.dir)
    layers, diff_ids = [], []
    for tar in args.layer:
        diff_ids.append(file_digest(tar))
        if args.gzip:
            gz = tar + ".gz"
            with open(tar, "rb") as src, gzip.open(gz, "wb", compresslevel=1) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            digest, size = put_blob(args.dir, path=gz); os.remove(gz)
            mt = "application/vnd.oci.image.layer.v1.tar+gzip"
        else:
            digest, size = put_blob(args.dir, path=tar)
            mt = "application/vnd.oci.image.layer.v1.tar"
        layers.append({"mediaType": mt, "digest": digest, "size": size})
    config = {"architecture": args.arch, "os": "linux",
              "config": {"Cmd": [args.cmd]} if args.cmd else {},
              "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    cdigest, csize = put_blob(args.dir, data=json.dumps(config).encode())
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest, "size": csize},
                "layers": layers}
    mdigest, msize = put_blob(args.dir, data=json.dumps(manifest).encode())
    add_to_index(args.dir, {"mediaType": manifest["mediaType"], "digest": mdigest, "size": msize,
                            "platform": {"architecture": args.arch, "os": "linux"}}, args.tag)
    print(mdigest)

def index(args):
    init_layout(args.dir)
    entries = []
    for spec in args.image:
        arch, src = spec.split("=", 1)
        src_dir, src_tag = src.rsplit(":", 1)
        src_index = json.load(open(os.path.join(src_dir, "index.json")))
        desc = next(m for m in src_index["manifests"]
                    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == src_tag)
        manifest_path = os.path.join(src_dir, "blobs", "sha256", desc["digest"].split(":")[1])
        manifest = json.load(open(manifest_path))
        for blob in [manifest["config"]] + manifest["layers"] + [desc]:
            name = blob["digest"].split(":")[1]
            dst = os.path.join(args.dir, "blobs", "sha256", name)
            if not os.path.exists(dst):
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copyfile(os.path.join(src_dir, "blobs", "sha256", name), dst)
        entries.append({"mediaType": desc["mediaType"], "digest": desc["digest"], "size": desc["size"],
                        "platform": {"architecture": arch, "os": "linux"}})
    idx = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries}
    digest, size = put_blob(args.dir, data=json.dumps(idx).encode())
    add_to_index(args.dir, {"mediaType": idx["mediaType"], "digest": digest, "size": size}, args.tag)
    print(digest)

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    i = sub.add_parser("image"); i.add_argument("dir"); i.add_argument("--tag", required=True)
    i.add_argument("--layer", action="append", required=True); i.add_argument("--arch", default="amd64")
    i.add_argument("--gzip", action="store_true"); i.add_argument("--cmd")
    x = sub.add_parser("index"); x.add_argument("dir"); x.add_argument("--tag", required=True)
    x.add_argument("--image", action="append", required=True)
    args = p.parse_args()
    image(args) if args.what == "image" else index(args)

if __name__ == "__main__":
    sys.exit(main())
