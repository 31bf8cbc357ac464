#!/bin/bash
# Usage (root, cgroup-v1 memory controller): scripts/bench-cache-cold.sh  [LIMIT=bytes COUNT=variants-per-photo]
# Issue 14: reading a cache larger than the memory its reader may use. A raw cache of 500x375
# photos (~562 KB a record) ~3x the memory limit of a cgroup-v1 child of this session's memory
# cgroup (the limit counts the page cache the reader faults in). Before each run the cache's own
# pages are evicted (posix_fadvise DONTNEED on its files; nothing else is touched).
set -e
B=$(realpath -m ${B:-/tmp/cache-cold}); PY=${PY:-.venv/bin/python}; DS=${DS:-target/release/dino-stream}
LIMIT=${LIMIT:-805306368}   # 768 MiB
mkdir -p $B
cd "$(dirname "$0")/.."
[ -d $B/big ] || $PY tests/reference/make_bench_jpegs.py $B/big --count ${COUNT:-400} >/dev/null
sed "s#/data/imagenet/train#$B/big#" pipelines/imagenet.toml > $B/big.toml
[ -f $B/big_raw/manifest.json ] || $DS cache build $B/big.toml --out $B/big_raw --set cache.workers=2 >/dev/null 2>&1
{ printf '[source]\ntype = "cache"\npath = "%s"\n' "$B/big_raw"; sed -n '/^\[decode\]/,/^\[batcher\]/p' pipelines/imagenet.toml | grep -v '^\[batcher\]'; } > $B/big_raw.toml
du -sb $B/big_raw
CG=/sys/fs/cgroup/memory$(grep ':memory:' /proc/self/cgroup | cut -d: -f3)/s7cache
mkdir -p $CG; echo $LIMIT > $CG/memory.limit_in_bytes
evict() { $PY -c "
import os,sys,glob
for f in glob.glob('$B/big_raw/*'):
    fd=os.open(f,os.O_RDONLY); os.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED); os.close(fd)"; }
for r in 1 2; do for order in random quasi_random; do
  evict
  out=$(sh -c "echo \$\$ > $CG/cgroup.procs; exec $DS bench pipeline $B/big_raw.toml --seconds 20 --set source.order=\"$order\"" 2>&1 | grep -E '^pipeline:|reads:' | tr '\n' ' ')
  echo "limit $((LIMIT>>20)) MiB, $order: $out (peak $(( $(cat $CG/memory.max_usage_in_bytes) >> 20 )) MiB)"
  echo 0 > $CG/memory.max_usage_in_bytes || true
done; done
# the same without a limit and with the cache warm, for reference
$PY -c "import glob; [open(f,'rb').read() for f in glob.glob('$B/big_raw/*')]" >/dev/null
echo "no limit, warm, quasi_random: $($DS bench pipeline $B/big_raw.toml --seconds 20 --set source.order=\"quasi_random\" 2>&1 | grep -E '^pipeline:|reads:' | tr '\n' ' ')"
rmdir $CG
