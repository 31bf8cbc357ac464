"""WebDataset shards from an ImageNet-layout folder, for tests/webdataset.rs.

    make_webdataset.py SRC OUT tarfile      # Python's tarfile, shards of 7 samples
    make_webdataset.py SRC OUT webdataset   # the webdataset package's ShardWriter
    make_webdataset.py braces PATTERN...    # braceexpand's expansion of each pattern, as JSON

Samples are written in sorted path order (the image folder's order), keyed by the path without
its extension. tarfile shards label even samples with `.cls` and odd ones with `.json`, add a
`.txt` member to each, and put shard 1's members under a directory name over 100 characters (so
its names need PAX headers); with `--orphan` shard 0 also gets a key that has only a `.cls`.
Prints the samples written, as JSON: [{"shard", "key", "file", "label"}].
"""

import io
import json
import os
import sys
import tarfile


def samples(src):
    classes = sorted(d for d in os.listdir(src) if os.path.isdir(os.path.join(src, d)))
    out = []
    for label, c in enumerate(classes):
        for f in sorted(os.listdir(os.path.join(src, c))):
            out.append((f"{c}/{f}", label))
    return sorted(out)


def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def write_tarfile(src, out, orphan):
    written = []
    items = samples(src)
    per_shard = 7
    for shard in range((len(items) + per_shard - 1) // per_shard):
        name = f"shard-{shard:06d}.tar"
        with tarfile.open(os.path.join(out, name), "w", format=tarfile.PAX_FORMAT) as tar:
            if orphan and shard == 0:
                add(tar, "orphan_key.cls", b"1")
            for i in range(shard * per_shard, min(len(items), (shard + 1) * per_shard)):
                rel, label = items[i]
                key = os.path.splitext(rel)[0]
                if shard == 1:
                    key = "d" * 110 + "/" + key
                with open(os.path.join(src, rel), "rb") as f:
                    add(tar, key + ".jpg", f.read())
                if i % 2 == 0:
                    add(tar, key + ".cls", str(label).encode())
                else:
                    add(tar, key + ".json", json.dumps({"label": label, "w": 1}).encode())
                add(tar, key + ".txt", b"a caption")
                written.append({"shard": name, "key": key, "file": rel, "label": label})
    return written


def write_webdataset(src, out):
    import webdataset as wds

    written = []
    pattern = os.path.join(out, "wds-%06d.tar")
    with wds.ShardWriter(pattern, maxcount=6, verbose=0) as sink:
        for i, (rel, label) in enumerate(samples(src)):
            key = f"sample{i:06d}"
            with open(os.path.join(src, rel), "rb") as f:
                sink.write({"__key__": key, "jpg": f.read(), "cls": label})
            name = f"wds-{i // 6:06d}.tar"
            written.append({"shard": name, "key": key, "file": rel, "label": label})
    return written


def main():
    if sys.argv[1] == "braces":
        from braceexpand import braceexpand

        print(json.dumps([list(braceexpand(p)) for p in sys.argv[2:]]))
        return
    src, out, mode = sys.argv[1:4]
    os.makedirs(out, exist_ok=True)
    if mode == "tarfile":
        written = write_tarfile(src, out, "--orphan" in sys.argv[4:])
    else:
        written = write_webdataset(src, out)
    print(json.dumps(written))


if __name__ == "__main__":
    main()
