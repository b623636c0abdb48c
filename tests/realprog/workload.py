# workload.py — a non-trivial Python run for tests/realprog: json, re,
# sqlite3, collections, hashlib, threads, big and small objects. Prints a
# deterministic summary that must be identical with and without hakmem.
import collections, hashlib, json, re, sqlite3, threading, zlib

data = [{"id": i, "name": "item%d" % i, "tags": ["t%d" % (i % 7), "x" * (i % 50)],
         "score": i * 0.25} for i in range(30000)]
text = json.dumps(data, sort_keys=True)
assert json.loads(text) == data
digits = collections.Counter(m[-1] for m in re.findall(r'"item(\d+)"', text))
long_tags = len(re.findall(r'"x{40,}"', text))

db = sqlite3.connect(":memory:")
db.execute("create table t(id integer primary key, name text, v real)")
db.executemany("insert into t(name, v) values (?, ?)", ((f"n{i}", i * 0.5) for i in range(20000)))
db.execute("create index t_name on t(name)")
row = db.execute("select count(*), sum(v), max(name) from t where id % 3 = 0").fetchone()

results = [None] * 4
def work(k):
    d = {}
    for i in range(40000):
        d[("key", i, k)] = bytes(i % 300) + str(i * k).encode()
        if i % 3 == 0:
            d.pop(("key", i // 2, k), None)
    h = hashlib.sha256()
    for key in sorted(d):
        h.update(d[key])
    results[k] = h.hexdigest()
threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
for t in threads: t.start()
for t in threads: t.join()

blob = zlib.compress(text.encode() * 4, 6)
big = [bytearray(1 << 20) for _ in range(40)]
del big
print(len(text), sorted(digits.items()), long_tags, row, results,
      hashlib.sha256(blob).hexdigest()[:16])
