#!/usr/bin/env bash
# Regenerates fuzz/corpus/decode_frame/seed-* from the wire examples in
# PROTOCOL.md: every `### Example: NAME` heading followed by a ```hex block
# becomes `seed-<name>` holding those bytes.
#
#   fuzz/make-corpus.sh          rewrite the seeds
#   fuzz/make-corpus.sh --check  exit 1 if the committed seeds are stale
#
# Inside a hex block, whitespace is ignored and `#` or `//` starts a comment.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec python3 - "$here/../PROTOCOL.md" "$here/corpus/decode_frame" "${1:-}" <<'PY'
import os, re, sys

spec, outdir, mode = sys.argv[1], sys.argv[2], sys.argv[3]
if mode not in ("", "--check"):
    sys.exit(f"usage: make-corpus.sh [--check] (got {mode!r})")

examples = {}  # file name -> bytes, in document order
pending = None  # example name waiting for its hex block
block = None    # lines of the hex block being read
with open(spec, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
        stripped = line.strip()
        if block is not None:
            if stripped.startswith("```"):
                hexdigits = "".join(block)
                if not hexdigits or len(hexdigits) % 2 or re.search("[^0-9a-fA-F]", hexdigits):
                    sys.exit(f"{spec}:{lineno}: example {pending!r}: bad hex {hexdigits!r}")
                slug = re.sub("[^a-z0-9]+", "-", pending.lower()).strip("-")
                name = f"seed-{slug}"
                if name in examples:
                    sys.exit(f"{spec}:{lineno}: two examples named like {pending!r}")
                examples[name] = bytes.fromhex(hexdigits)
                pending, block = None, None
            else:
                code = re.split(r"#|//", line, maxsplit=1)[0]
                block.append(re.sub(r"\s+", "", code))
            continue
        m = re.match(r"###\s+Example:\s*(.+?)\s*$", line)
        if m:
            pending = m.group(1)
        elif pending is not None and re.match(r"```\s*hex\s*$", stripped):
            block = []
        elif pending is not None and stripped.startswith("#"):
            pending = None  # a new heading before any hex block: not an example

if block is not None:
    sys.exit(f"{spec}: unterminated hex block for example {pending!r}")
if not examples:
    sys.exit(f"{spec}: no `### Example: NAME` + ```hex blocks found")

existing = {n for n in os.listdir(outdir)} if os.path.isdir(outdir) else set()
existing = {n for n in existing if n.startswith("seed-")}
if mode == "--check":
    stale = sorted(existing ^ set(examples))
    for name, data in examples.items():
        path = os.path.join(outdir, name)
        if name in existing and open(path, "rb").read() != data:
            stale.append(name)
    if stale:
        sys.exit("stale decode_frame seeds (run fuzz/make-corpus.sh): " + ", ".join(stale))
    print(f"{len(examples)} decode_frame seeds match PROTOCOL.md")
    sys.exit(0)

os.makedirs(outdir, exist_ok=True)
for name in existing - set(examples):
    os.remove(os.path.join(outdir, name))
for name, data in examples.items():
    with open(os.path.join(outdir, name), "wb") as f:
        f.write(data)
print(f"wrote {len(examples)} seeds to {os.path.relpath(outdir)}")
PY
