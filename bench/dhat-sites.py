#!/usr/bin/env python3
"""dhat-sites.py -- the heap at its peak from a DHAT profile, by allocation site, per connection.

    bench/dhat-sites.py DHAT_JSON CONNS

Lists the allocation sites that held one block per connection (or two, or three...) when the
heap was at its largest, with their bytes, blocks, bytes per connection (CONNS) and the first
frames that name something other than the allocator; then their sum per connection. Sites are
merged by those frames (each listener thread has its own stacks below them), and a site counts
when its blocks are within 5 % of a whole multiple of CONNS: what connections hold, not what
the process holds once (trust anchors, pools). Reads the JSON that `valgrind --tool=dhat`
writes (bench/dhat-idle.sh).
"""
import json
import re
import sys

ALLOCATOR = re.compile(
    r"alloc::|alloc_impl|allocate|box_new|boxed\.rs|raw_vec|RawVec|vec/mod\.rs|slice\.rs|"
    r"sync\.rs:|sys/alloc|alloc\.rs|main\.rs:|vgpreload|malloc|posix_memalign|UnknownInlinedFun"
)


def frames(profile, site, count):
    named = []
    for index in site["fs"]:
        frame = profile["ftbl"][index].split(": ", 1)[-1]
        if not ALLOCATOR.search(frame):
            named.append(frame[:160])
        if len(named) == count:
            break
    return named


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    profile = json.load(open(sys.argv[1]))
    conns = int(sys.argv[2])
    merged = {}
    for site in profile["pps"]:
        if not site.get("gbk"):
            continue
        key = tuple(frames(profile, site, 3))
        bytes_, blocks = merged.get(key, (0, 0))
        merged[key] = (bytes_ + site["gb"], blocks + site["gbk"])
    per_connection = [
        (bytes_, blocks, key)
        for key, (bytes_, blocks) in merged.items()
        if blocks >= 0.95 * conns and abs(blocks / conns - round(blocks / conns)) <= 0.05
    ]
    per_connection.sort(key=lambda s: -s[0])
    for bytes_, blocks, key in per_connection:
        print(f"{bytes_:>9} bytes {blocks:>6} blocks {bytes_ / conns:>7.0f} per connection")
        for frame in key:
            print(f"      {frame}")
    total = sum(s[0] for s in per_connection)
    print(f"held per connection: {total / conns:.0f} bytes in {len(per_connection)} sites")


if __name__ == "__main__":
    main()
