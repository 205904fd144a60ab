// Start mailstorm-sink for a test file: on ports the OS picks, read from its
// ready file. Copy this file next to your tests.
//
// The binary is $MAILSTORM_SINK, else mailstorm-sink from this repo's target/
// (debug, then release), else mailstorm-sink on PATH.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const READY_TIMEOUT_MS = 10_000;
const REPO = path.resolve(fileURLToPath(import.meta.url), '../../../..');

function sinkBinary() {
  const built = ['debug', 'release'].map((p) => path.join(REPO, 'target', p, 'mailstorm-sink'));
  return process.env.MAILSTORM_SINK || built.find((p) => existsSync(p)) || 'mailstorm-sink';
}

export async function startSink() {
  const dir = mkdtempSync(path.join(tmpdir(), 'mailstorm-sink-'));
  const readyFile = path.join(dir, 'ready.json');
  const logFile = path.join(dir, 'sink.log');
  const log = openSync(logFile, 'w');
  const child = spawn(
    sinkBinary(),
    ['--listen', '127.0.0.1:0', '--control', '127.0.0.1:0', '--ready-file', readyFile],
    { stdio: ['ignore', log, log] },
  );
  closeSync(log);
  let died = null; // set when the sink exits (or could not be started)
  const exited = new Promise((resolve) => {
    child.once('error', (err) => resolve((died = err.message)));
    child.once('exit', (code, signal) => resolve((died = `exit ${code ?? signal}`)));
  });
  const logText = () => readFileSync(logFile, 'utf8');

  // The sink writes the file (atomically) once every listener accepts.
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (!existsSync(readyFile)) {
    if (died) throw new Error(`mailstorm-sink stopped before it was ready (${died}):\n${logText()}`);
    if (Date.now() > deadline) {
      child.kill();
      throw new Error(`mailstorm-sink not ready after ${READY_TIMEOUT_MS} ms:\n${logText()}`);
    }
    await sleep(20);
  }
  const info = JSON.parse(readFileSync(readyFile, 'utf8')); // smtp, tls, control, pid...
  const [, host, port] = info.smtp[0].match(/^\[?(.*?)\]?:(\d+)$/);
  const control = `http://${info.control}`;

  async function api(method, urlPath, body, contentType) {
    const headers = contentType ? { 'Content-Type': contentType } : {};
    const res = await fetch(control + urlPath, { method, body, headers });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${urlPath}: ${res.status} ${text}`);
    return text ? JSON.parse(text) : null;
  }

  return {
    info,
    host,
    port: Number(port),
    // Fault plan (and expected behaviour) for sessions that EHLO as `helo`.
    loadPlan: (helo, yaml) =>
      api('PUT', `/plan?helo=${encodeURIComponent(helo)}`, yaml, 'application/yaml'),
    verdict: (helo) => api('GET', `/clients/${encodeURIComponent(helo)}/verdict`),
    async stop() {
      if (!died) child.kill('SIGTERM'); // the sink stops cleanly (exit 0) on SIGTERM
      const stuck = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(stuck);
      if (died !== 'exit 0') throw new Error(`mailstorm-sink died or failed to stop (${died}):\n${logText()}`);
    },
  };
}
