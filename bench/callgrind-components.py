#!/usr/bin/env python3
"""callgrind-components.py -- a request's user-space instructions by component.

    bench/callgrind.sh 1000 A.out BIN CONFIG
    bench/callgrind.sh 6000 B.out BIN CONFIG
    bench/callgrind-components.py A.out 1000 B.out 6000 [--top N]

Differences the self cost of every function between two callgrind profiles of the same
binary and configuration taken with different request counts, so start-up, shutdown and
certificate loading cancel out, and divides by the difference in requests. Prints the
instructions per request by component (the crate or library the code comes from, which for
inlined code is where it was written, except the standard library's, which counts with the
function it was inlined into) and the top functions.
"""

import collections
import re
import subprocess
import sys

LINE = re.compile(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\S.*)$")

# (component, test on "path:function") in order; the first that matches wins.
COMPONENTS = [
    ("allocator (mimalloc)", lambda p, f: "mimalloc" in p),
    ("libc memcpy/memset", lambda p, f: "memmove" in p or "memset" in p or "memcpy" in f),
    ("http crate header maps + httparse",
     lambda p, f: "/http-1." in p or "/httparse-" in p or f.startswith("http::header")),
    ("tokio sync (channels, notify)", lambda p, f: "/tokio-" in p and "/sync/" in p),
    ("tokio runtime, I/O driver, timers", lambda p, f: "/tokio-" in p),
    ("clock reads", lambda p, f: p.endswith("time.rs") or "clock_gettime" in p),
    ("connection pool + SipHash",
     lambda p, f: "/pingora-pool-" in p or "/dashmap-" in p or "hash/sip.rs" in p),
    ("Pingora timeouts", lambda p, f: "/pingora-timeout-" in p),
    ("Pingora (core, proxy, http)", lambda p, f: "vendor/pingora" in p or "/pingora-" in p),
    ("bytes", lambda p, f: "/bytes-" in p),
    ("Switchyard", lambda p, f: p.startswith("src/") or "/src/" in p and "/registry/" not in p
     and "/rustc/" not in p and "sysdeps" not in p),
    ("prometheus", lambda p, f: "/prometheus-" in p),
    ("libc, other", lambda p, f: "sysdeps" in p or "nptl" in p or "libc" in p),
]


def self_costs(profile):
    """Self cost of every function in a callgrind profile, keyed by "path:function"."""
    out = subprocess.run(
        ["callgrind_annotate", "--auto=no", "--threshold=100", profile],
        capture_output=True, text=True, check=True).stdout
    costs = collections.Counter()
    for line in out.splitlines():
        m = LINE.match(line)
        if m and ":" in m.group(2) and "PROGRAM TOTALS" not in line:
            costs[m.group(2).strip()] += int(m.group(1).replace(",", ""))
    return costs


def crate_of(function):
    """The crate a function belongs to: `<a::B as c::D>::e` belongs to `a`."""
    name = function.lstrip("<").split(" [")[0]
    return name.split("::")[0]


def component(key):
    path, _, function = key.partition(":")
    if "/rustc/" in path:
        # Standard-library code (pointer moves, iterators, Option, time) inlined into a
        # function: count it with the crate of that function.
        crate = crate_of(function)
        path = {"pingora_core": "vendor/pingora", "pingora_proxy": "vendor/pingora",
                "pingora_http": "vendor/pingora", "pingora_pool": "/pingora-pool-",
                "http": "/http-1.", "httparse": "/httparse-", "tokio": "/tokio-",
                "bytes": "/bytes-", "switchyard": "src/", "prometheus": "/prometheus-",
                "h2": "/h2-", "dashmap": "/dashmap-"}.get(crate, path)
        if crate == "tokio" and "::sync::" in function:
            path = "/tokio-/sync/"
        if crate == "std" and "time" in function:
            path = "time.rs"
    for name, test in COMPONENTS:
        if test(path, function):
            return name
    return "other (std and core code inlined elsewhere)"


def main(argv):
    if len(argv) < 4:
        sys.exit(__doc__)
    top = int(argv[argv.index("--top") + 1]) if "--top" in argv else 20
    a, na, b, nb = argv[0], int(argv[1]), argv[2], int(argv[3])
    ca, cb = self_costs(a), self_costs(b)
    n = nb - na
    per = {k: (cb[k] - ca[k]) / n for k in set(ca) | set(cb)}
    total = sum(per.values())
    print(f"user-space instructions per request: {total:,.0f}")
    groups = collections.Counter()
    for key, value in per.items():
        groups[component(key)] += value
    for name, value in groups.most_common():
        print(f"{value:9,.0f}  {100 * value / total:5.1f} %  {name}")
    print(f"\ntop {top} functions (self cost per request):")
    for key, value in sorted(per.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{value:9,.0f}  {key.split(' [')[0][-150:]}")


if __name__ == "__main__":
    main(sys.argv[1:])
