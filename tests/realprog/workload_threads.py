# workload_threads.py — 40 threads in a ring pass bytes objects through queues
# (every object freed by another thread than the one that made it), then exit.
# Printed: the bytes all threads received and how many threads received any,
# the same under any malloc.
# Before 2026-12-01 (fourth session) this crashed under hakmem at 16 threads and
# more: glibc frees its per-thread state after the last key destructor, and
# that free set the exiting thread up again in the allocator.
import queue
import random
import threading

N = 40
ROUNDS = 3000
qs = [queue.Queue() for _ in range(N)]
sums = [0] * N


def work(i):
    r = random.Random(i)
    out, inq = qs[(i + 1) % N], qs[i]
    got = n = 0
    for _ in range(ROUNDS):
        out.put(bytes([i % 251]) * r.randint(16, 1000))   # unbounded: never blocks
        try:
            got += len(inq.get_nowait())
            n += 1
        except queue.Empty:
            pass
    while n < ROUNDS:                     # the predecessor sends exactly ROUNDS
        got += len(inq.get())
        n += 1
    sums[i] = got


threads = [threading.Thread(target=work, args=(i,)) for i in range(N)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(sum(sums), len([s for s in sums if s > 0]))
