"""Reads WebDataset tar shards with Python's tarfile (and PIL for the pictures), independently
of dino-stream, and prints one JSON line per key: the tar, the key, its extensions, the class
and the picture's size. Used by tests/cache_formats.rs on `cache export --webdataset`."""
import io
import json
import sys
import tarfile
from pathlib import Path

from PIL import Image

out = []
for tar_path in sorted(Path(sys.argv[1]).glob("*.tar")):
    with tarfile.open(tar_path) as tar:
        entries = {}
        order = []
        for m in tar.getmembers():
            assert m.isfile(), m.name
            key, ext = m.name.split(".", 1)
            if key not in entries:
                entries[key] = {}
                order.append(key)
            entries[key][ext] = tar.extractfile(m).read()
        for key in order:
            e = entries[key]
            rec = {"tar": tar_path.name, "key": key, "exts": sorted(e)}
            if "cls" in e:
                rec["cls"] = int(e["cls"].decode())
            for ext in ("jpg", "png"):
                if ext in e:
                    img = Image.open(io.BytesIO(e[ext]))
                    img.load()
                    rec["format"] = img.format
                    rec["size"] = list(img.size)
                    rec["mode"] = img.mode
            out.append(rec)
print(json.dumps(out))
