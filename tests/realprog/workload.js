// workload.js — a Node.js program for run_realprog.sh: V8's own heap sits on
// mmap, but everything around it (strings handed to C++, Buffers, zlib's
// state, the message queues between threads, libuv's thread pool) goes
// through malloc, from several threads at once. Prints only results that do
// not depend on the allocator.
'use strict';
const { Worker, isMainThread, parentPort, workerData } = require('worker_threads');
const zlib = require('zlib');
const crypto = require('crypto');

function digest(buf) { return crypto.createHash('sha256').update(buf).digest('hex').slice(0, 16); }

if (!isMainThread) {
  // Each worker builds records, sends them to the main thread in batches
  // (structured clone: allocated here, freed there) and compresses a buffer.
  const { id, n } = workerData;
  let batch = [];
  for (let i = 0; i < n; i++) {
    batch.push({ id, i, s: 'w' + id + '-' + 'x'.repeat(i % 300), a: new Uint8Array(64 + (i % 2000)).fill(i & 255) });
    if (batch.length === 200) { parentPort.postMessage(batch); batch = []; }
  }
  if (batch.length) parentPort.postMessage(batch);
  const big = Buffer.alloc(1 << 20, id);
  parentPort.postMessage({ done: id, z: digest(zlib.deflateSync(big)) });
  return;
}

// Main thread: a map with churn, many Buffers of growing sizes, JSON.
const m = new Map();
let sum = 0;
for (let i = 0; i < 200000; i++) {
  m.set('k' + i, { v: i, s: 'y'.repeat(i % 120) });
  if (i % 3 === 0) m.delete('k' + (i - 1));
}
for (const v of m.values()) sum += v.v + v.s.length;
const bufs = [];
for (let i = 0; i < 3000; i++) {
  bufs.push(Buffer.alloc(500 + i * 37, i & 255));
  if (bufs.length > 150) bufs.shift();
}
const json = JSON.stringify([...m.entries()].slice(0, 30000));
console.log('map', m.size, sum, 'bufs', bufs.length, digest(Buffer.concat(bufs)), 'json', json.length, digest(json));

// Asynchronous zlib: libuv's thread pool allocates and frees its buffers.
const gz = zlib.gzipSync(Buffer.from(json));
zlib.gunzip(gz, (err, out) => {
  if (err) throw err;
  console.log('gunzip', out.length, digest(out));
  const workers = 4, per = 6000;
  let received = 0, bytes = 0, exited = 0, done = [];
  for (let w = 0; w < workers; w++) {
    const t = new Worker(__filename, { workerData: { id: w, n: per } });
    t.on('message', (msg) => {
      if (Array.isArray(msg)) {
        received += msg.length;
        for (const r of msg) bytes += r.s.length + r.a.length;
      } else {
        done.push(msg.done + ':' + msg.z);
      }
    });
    t.on('error', (e) => { console.error(e); process.exitCode = 1; });
    t.on('exit', () => {
      if (++exited === workers) console.log('workers', received, bytes, done.sort().join(' '));
    });
  }
});
