#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_ops (tests/fuzz/corpus/). Run from anywhere:
    python3 tests/fuzz/gen_corpus.py
Each op is [op][slot byte][args]; see fuzz_ops.c (op % 10: 0,1 malloc, 2 free,
3 realloc, 4 calloc, 5 aligned, 6 check, 7,8 handoff, 9 edge cases)."""
import os, random

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus")

def op(code, slot, *args):
    # slot 0..31: low 4 bits in op's high nibble, bit 4 in the second byte
    return bytes([(slot & 15) << 4 | code, (slot & 16)]) + bytes(args)

def size(cls, lo=0, hi=0):
    return bytes([cls << 5 | (lo & 31), lo & 0xff, hi & 0xff])

seeds = {}
# small malloc / check / free in all slots
seeds["small_cycle"] = b"".join(op(0, s, *size(1, s * 7, 0)) + op(6, s) for s in range(32)) + \
                       b"".join(op(2, s) for s in range(32))
# every size band, then realloc up and down
seeds["bands_realloc"] = b"".join(op(0, b, *size(b)) for b in range(8)) + \
                         b"".join(op(3, b, *size(7 - b, 99, 1)) for b in range(8)) + \
                         b"".join(op(6, b) for b in range(8))
# calloc (incl. overflow) and aligned (incl. bad alignment)
seeds["calloc_aligned"] = op(4, 1, 3, *size(2, 50)) + op(4, 2, 0xff, *size(1)) + \
    b"".join(op(5, a % 32, a, *size(1 + a % 5, a)) for a in range(22)) + \
    op(5, 3, 0xf3, *size(1)) + op(5, 4, 0x80 | 12, *size(4))
# cross-thread handoff of many blocks
seeds["handoff"] = b"".join(op(1, s, *size(1 + s % 6, s)) + op(7, s) for s in range(32)) * 3
# edge cases
seeds["edges"] = op(0, 5, *size(2)) + b"".join(op(9, 0, e, 5, 3, 9) for e in range(16))
# a random mix
rnd = random.Random(5)
seeds["random_mix"] = bytes(rnd.randrange(256) for _ in range(1024))

os.makedirs(OUT, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
print(f"wrote {len(seeds)} seeds to {OUT}")
