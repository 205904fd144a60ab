// Is a mail client's retry behaviour sane? The sink injects the faults and
// judges the client; each test tells its client apart by its EHLO name.
//
// Stand-ins for your code: deliverPolitely (retries a 451 after a delay,
// gives up on a 5xx) and deliverHastily (retries at once, even after a 550).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import nodemailer from 'nodemailer';
import { startSink } from './sink.js';

// Faults for one client, and the behaviour expected of it: the first RCPT to
// later@ gets 451 and the next 250; nobody@ always gets 550. A retry must
// wait 200 ms (the default is 1 s; shortened to keep the test fast).
// nodemailer's sendMail hangs up without QUIT (RFC 5321 4.1.1.10 asks for a
// QUIT first), which the default unclean_quits==0 fails: accept it here.
const PLAN = `
expect:
  - retry_4xx_min_interval>=200ms
  - unclean_quits>=0
rules:
  - name: deferred-once
    stage: rcpt
    match: { recipient: "later@*" }
    sequence: [451, 250]
  - name: unknown-user
    stage: rcpt
    match: { recipient: "nobody@*" }
    action: { reply: { code: 550, enhanced: "5.1.1", text: "User unknown" } }
`;

let sink; // one sink for this file
before(async () => {
  sink = await startSink();
});
after(async () => {
  await sink?.stop();
});

// One attempt; the reply code for the recipient.
async function sendOnce(helo, to) {
  // `name` is the EHLO name; ignoreTLS: plain SMTP, no STARTTLS.
  const mailer = nodemailer.createTransport({ host: sink.host, port: sink.port, name: helo, ignoreTLS: true });
  try {
    await mailer.sendMail({ from: `app@${helo}.test`, to, subject: 'hello', text: 'hi' });
    return 250;
  } catch (err) {
    if (!err.responseCode) throw err;
    return err.responseCode;
  }
}

async function deliverPolitely(helo, to, { retryAfterMs = 300, attempts = 5 } = {}) {
  let code;
  for (let i = 0; i < attempts; i++) {
    code = await sendOnce(helo, to);
    if (code < 400 || code >= 500) return code; // delivered, or bounced for good
    await sleep(retryAfterMs); // the behaviour under test: back off
  }
  return code;
}

async function deliverHastily(helo, to) {
  let code = await sendOnce(helo, to);
  if (code >= 400) code = await sendOnce(helo, to); // at once, even after a 5xx
  return code;
}

const results = (verdict) => Object.fromEntries(verdict.rules.map((r) => [r.rule, r.result]));

test('a polite client passes', async () => {
  await sink.loadPlan('polite-app', PLAN);
  assert.equal(await deliverPolitely('polite-app', 'later@example.test'), 250);
  assert.equal(await deliverPolitely('polite-app', 'nobody@example.test'), 550);

  const verdict = await sink.verdict('polite-app');
  assert.equal(verdict.verdict, 'pass', JSON.stringify(verdict));
  assert.equal(results(verdict).retry_4xx_min_interval, 'pass');
  assert.equal(results(verdict).resent_after_5xx, 'pass');
});

test('a hasty client fails', async () => {
  await sink.loadPlan('hasty-app', PLAN);
  assert.equal(await deliverHastily('hasty-app', 'later@example.test'), 250);
  assert.equal(await deliverHastily('hasty-app', 'nobody@example.test'), 550);

  const verdict = await sink.verdict('hasty-app');
  assert.equal(verdict.verdict, 'fail', JSON.stringify(verdict));
  assert.equal(results(verdict).retry_4xx_min_interval, 'fail');
  assert.equal(results(verdict).resent_after_5xx, 'fail');
});
