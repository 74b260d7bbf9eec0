'use strict';
// The Node.js/Express handler of Metigan's webhook guide, for the HTTP benchmark
// (bench/http/run.sh): raw body with express.raw, HMAC-SHA256 of `t.body` with
// crypto.createHmac, crypto.timingSafeEqual, the 5-minute window, JSON.parse, a switch on the
// event type. No per-request logging.
//
//   WEBHOOK_SECRET=... PORT=3002 node bench/http/express-server.js

const crypto = require('crypto');
const express = require('express');

const secret = process.env.WEBHOOK_SECRET;
if (!secret) {
  console.error('express-server: WEBHOOK_SECRET is not set');
  process.exit(2);
}
const port = Number(process.env.PORT || 3002);
const TOLERANCE_SECONDS = 300;

function parseSignatureHeader(header) {
  const parts = {};
  for (const item of header.split(',')) {
    const eq = item.indexOf('=');
    if (eq > 0) parts[item.slice(0, eq).trim()] = item.slice(eq + 1).trim();
  }
  return parts;
}

const app = express();

app.post('/webhooks/metigan', express.raw({ type: 'application/json' }), (req, res) => {
  const header = req.get('X-Webhook-Signature');
  if (!header) return res.status(401).send('Missing signature');
  const { t, v1 } = parseSignatureHeader(header);
  const timestamp = t || req.get('X-Webhook-Timestamp');
  if (!timestamp || !v1) return res.status(401).send('Invalid signature header');
  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > TOLERANCE_SECONDS) {
    return res.status(401).send('Timestamp outside the tolerance');
  }

  const payload = req.body.toString('utf8');
  const expected = crypto.createHmac('sha256', secret).update(`${timestamp}.${payload}`).digest('hex');
  const received = Buffer.from(v1, 'utf8');
  const computed = Buffer.from(expected, 'utf8');
  if (received.length !== computed.length || !crypto.timingSafeEqual(received, computed)) {
    return res.status(401).send('Invalid signature');
  }

  let event;
  try {
    event = JSON.parse(payload);
  } catch {
    return res.status(400).send('Invalid JSON');
  }
  switch (event.event) {
    case 'email.delivered':
    case 'email.opened':
    case 'email.clicked':
    case 'email.bounced':
      // Update the email's status here (no logging in the benchmark).
      break;
    default:
      break;
  }
  res.status(200).send('OK');
});

app.listen(port, '127.0.0.1');
