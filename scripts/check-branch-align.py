#!/usr/bin/env python3
"""check-branch-align.py LIB... — no branch on the fast path of malloc, free,
operator new or operator delete (plain and sized) crosses or ends on a 32-byte
boundary.

Skylake-derived Intel cores (the JCC erratum's microcode fix) do not keep
such a branch, or a compare/test macro-fused with it, in the decoded-uop
cache, and the code around it runs from the legacy decoders. The Makefile
assembles with -Wa,-mbranches-within-32B-boundaries so the assembler pads
around them; this check reads the result back (objdump), from each entry
point to its first `ret`, and fails when a branch is affected: the same
source, laid out three ways, ran ws-tiny at 1.00, 1.09 and 1.09x the time
(CURRENT_TASK.md, eighth session).

A compare or test fuses with the jump after it unless it has a RIP-relative
operand, or a memory operand and an immediate (the rules the assembler applies
as well, after Agner Fog's tables).
"""
import re
import subprocess
import sys

FUSIBLE = ('cmp', 'test', 'add', 'sub', 'and', 'inc', 'dec')
ENTRIES = ('malloc', 'free', '_Znwm', '_ZdlPv', '_ZdlPvm')
WINDOW = 32


def entry_points(lib):
    out = subprocess.run(['nm', '-D', '--defined-only', lib], capture_output=True, text=True, check=True).stdout
    syms = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) == 3 and f[2] in ENTRIES:
            syms[f[2]] = int(f[0], 16)
    return syms


def fast_path(lib, addr):
    """(address, length, text) of each instruction from addr to the first ret or
    unconditional jump."""
    out = subprocess.run(['objdump', '-d', '--start-address=%#x' % addr, '--stop-address=%#x' % (addr + 512), lib],
                         capture_output=True, text=True, check=True).stdout
    insns = []
    for line in out.splitlines():
        m = re.match(r'\s+([0-9a-f]+):\s+((?:[0-9a-f]{2} )+)\s*(\S.*)?$', line)
        if not m:
            continue
        if m.group(3) is None:          # a continuation line of the bytes above
            a, n, t = insns[-1]
            insns[-1] = (a, n + len(m.group(2).split()), t)
            continue
        insns.append((int(m.group(1), 16), len(m.group(2).split()), m.group(3).strip()))
        if m.group(3).startswith(('ret', 'jmp')):   # the path ends, or goes on elsewhere
            break
    return insns


def affected(insns):
    bad = []
    for i, (addr, length, text) in enumerate(insns):
        op = text.split()[0]
        if not (op.startswith('j') or op.startswith('ret') or op.startswith('call')):
            continue
        start = addr
        if op.startswith('j') and op != 'jmp' and i > 0:
            prev = insns[i - 1][2]
            mem_imm = '$' in prev and '(' in prev
            if prev.split()[0].startswith(FUSIBLE) and '%rip' not in prev and not mem_imm:
                start = insns[i - 1][0]
        end = addr + length
        if start // WINDOW != (end - 1) // WINDOW or end % WINDOW == 0:
            bad.append('%#x %s' % (addr, text))
    return bad


def main():
    failed = False
    for lib in sys.argv[1:]:
        syms = entry_points(lib)
        for name in ENTRIES:
            if name not in syms:
                print('FAIL: %s exports no %s' % (lib, name))
                failed = True
                continue
            insns = fast_path(lib, syms[name])
            bad = affected(insns)
            if bad:
                print('FAIL: %s %s: branch on a 32-byte boundary: %s' % (lib, name, '; '.join(bad)))
                failed = True
            else:
                print('ok: %s %s: %d instructions to ret, no branch on a 32-byte boundary' % (lib, name, len(insns)))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
