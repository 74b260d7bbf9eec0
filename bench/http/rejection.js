'use strict';
// Rejection benchmark over HTTP (bench/http/run.sh): unsigned POSTs declaring a 1 KiB body and
// a 1 MiB body. Each request opens a connection, sends the headers and the first 1 KiB of the
// body (all of it for 1 KiB; the rest of the 1 MiB is never sent), and times the answer. A
// server that read the body before checking the signature header would wait for the missing
// bytes and time out; one that does not answers both equally fast.
//
//   node bench/http/rejection.js PORT [REQUESTS]

const net = require('net');

const port = Number(process.argv[2]);
const requests = Number(process.argv[3] || 2000);
const SIZES = [1024, 1024 * 1024];
const SENT = 1024;
const TIMEOUT_MS = 2000;
const chunk = Buffer.alloc(SENT, 'x');

function once(declared) {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let start;
    let answer = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer within ${TIMEOUT_MS} ms for a declared ${declared} B body`));
    }, TIMEOUT_MS);
    socket.setNoDelay(true);
    socket.on('connect', () => {
      start = process.hrtime.bigint();
      socket.write(
        'POST /webhooks/metigan HTTP/1.1\r\nHost: 127.0.0.1\r\n' +
          `Content-Type: application/json\r\nContent-Length: ${declared}\r\n\r\n`,
      );
      socket.write(chunk.subarray(0, Math.min(SENT, declared)));
    });
    socket.on('data', (data) => {
      if (start === undefined) return;
      const elapsed = Number(process.hrtime.bigint() - start) / 1000;
      answer += data.toString('latin1');
      clearTimeout(timer);
      socket.destroy();
      resolve({ micros: elapsed, status: answer.slice(9, 12) });
      start = undefined;
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))];
}

async function main() {
  const times = new Map(SIZES.map((size) => [size, []]));
  // Warm up, then alternate the sizes so drift hits both alike.
  for (let i = 0; i < 200; i++) await once(SIZES[i % 2]);
  for (let i = 0; i < requests * SIZES.length; i++) {
    const declared = SIZES[i % SIZES.length];
    const { micros, status } = await once(declared);
    if (status !== '401') throw new Error(`expected 401, got ${status} for ${declared} B`);
    times.get(declared).push(micros);
  }
  const medians = [];
  for (const size of SIZES) {
    const sorted = times.get(size).sort((a, b) => a - b);
    const median = percentile(sorted, 50);
    medians.push(median);
    console.log(
      `rejection declared=${size} sent=${Math.min(SENT, size)} requests=${sorted.length} ` +
        `median_us=${median.toFixed(1)} p99_us=${percentile(sorted, 99).toFixed(1)}`,
    );
  }
  console.log(`rejection ratio_1MiB_over_1KiB=${(medians[1] / medians[0]).toFixed(2)}`);
}

main().catch((error) => {
  console.error(`rejection: ${error.message}`);
  process.exit(1);
});
