// The chat page (engine/examples/chat.html) in a real browser: headless Chromium, driven
// by playwright-core, against `soliton-server --mode chat`.
//
// Usage: node tests/browser/chat.mjs [--server BIN] [--chromium BIN] [--screenshot PNG]
//   --server      soliton-server to run (default target/release/soliton-server)
//   --chromium    the browser (default /usr/bin/chromium, Debian's package)
//   --screenshot  where to save tab A's picture (default target/browser/chat-page.png;
//                 docs/chat-page.png is the one the docs show)
// Needs `npm install --no-save --no-package-lock playwright-core` in tests/browser.
//
// It starts the server on 127.0.0.1 (port 0: the server prints the one it got), opens
// three tabs (A and B in one room, C in another) and checks what the pages show: the
// OPEN state and the subprotocol 'chat', a text from A arriving in B and not in C, a
// Blob echoed to A alone, a 10 MiB binary echo intact with bufferedAmount back to 0,
// and, after SIGTERM to the server, close code 1001 with the server's reason and
// wasClean. Every wait is bounded; the server is killed at exit whatever happens.
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const opt = { server: 'target/release/soliton-server', chromium: '/usr/bin/chromium', screenshot: 'target/browser/chat-page.png' };
for (let i = 2; i < process.argv.length; i += 2) {
  const key = process.argv[i].replace(/^--/, '');
  if (!(key in opt) || process.argv[i + 1] === undefined) {
    console.error(`usage: node tests/browser/chat.mjs [--server BIN] [--chromium BIN] [--screenshot PNG]`);
    process.exit(2);
  }
  opt[key] = process.argv[i + 1];
}

const WAIT = 10_000; // ms, any one step
const BIG_WAIT = 30_000; // ms, the 10 MiB echo
const t0 = Date.now();
let server = null;
let serverLog = '';
let browser = null;
const profile = mkdtempSync(join(tmpdir(), 'soliton-chromium-'));
const watchdog = setTimeout(() => fail('the whole test took over 90 s'), 90_000);
let checks = 0;

function ok(what) {
  checks += 1;
  console.log(`ok ${checks} - ${what} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
}

function killServer() {
  if (server && server.exitCode === null && server.signalCode === null) server.kill('SIGKILL');
}
process.on('exit', () => {
  killServer();
  rmSync(profile, { recursive: true, force: true });
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    console.error(`FAIL: ${sig}`);
    process.exit(1);
  });
}

async function fail(why, pages = []) {
  console.error(`FAIL: ${why}`);
  for (const [name, page] of pages) {
    const shown = await page.evaluate(() => ({
      state: document.getElementById('state').textContent,
      log: [...document.querySelectorAll('#log li')].map((li) => li.textContent),
    })).catch((e) => ({ error: String(e) }));
    console.error(`tab ${name}: ${JSON.stringify(shown, null, 1)}`);
  }
  console.error(`server's log:\n${serverLog}`);
  killServer();
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}

// Starts the server on port 0 and resolves with its page's URL once it says so.
function startServer() {
  return new Promise((res, rej) => {
    const bin = resolve(root, opt.server);
    server = spawn(bin, ['--mode', 'chat', '--host', '127.0.0.1', '--port', '0', '--threads', '1', '--no-pin'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const timer = setTimeout(() => rej(new Error('the server did not say it listens within 10 s')), WAIT);
    server.on('error', (e) => { clearTimeout(timer); rej(new Error(`${bin}: ${e.message}`)); });
    server.on('exit', (code, sig) => { clearTimeout(timer); rej(new Error(`the server exited (${code ?? sig})`)); });
    server.stderr.setEncoding('utf8');
    server.stderr.on('data', (chunk) => {
      serverLog += chunk;
      // Only a whole line: the line can arrive in two chunks, and a URL cut at the
      // chunk's end ("http://127.0.0.1:") would be taken for the whole one.
      const m = serverLog.match(/chat page at (http:\/\/\S+)\r?\n/);
      if (m) { clearTimeout(timer); res(m[1]); }
    });
  });
}

const text = (page, id) => page.locator(`#${id}`).textContent({ timeout: WAIT });
const waitText = (page, id, want, timeout = WAIT) =>
  page.waitForFunction(([id, want]) => document.getElementById(id).textContent === want, [id, want], { timeout });
const logHas = (page, line, timeout = WAIT) =>
  page.waitForFunction((line) => [...document.querySelectorAll('#log li')].some((li) => li.textContent === line), line, { timeout });
const logLines = (page) => page.$$eval('#log li', (lis) => lis.map((li) => li.textContent));

const url = await startServer().catch((e) => fail(e.message));
console.log(`server: ${url} (${opt.server})`);
let tabs = [];
try {
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: opt.chromium,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 900, height: 1000 },
    timeout: WAIT,
  });
  const errors = [];
  const open = async (name, query) => {
    const page = await browser.newPage();
    page.setDefaultTimeout(WAIT);
    page.on('pageerror', (e) => errors.push(`tab ${name}: ${e.message}`));
    await page.goto(`${url}?${query}`, { timeout: WAIT });
    tabs.push([name, page]);
    return page;
  };
  const a = await open('A', 'room=ci-room&name=alice');
  const b = await open('B', 'room=ci-room&name=bob');
  const c = await open('C', 'room=elsewhere&name=carol');

  for (const [name, page] of tabs) {
    await waitText(page, 'state', 'OPEN');
    const protocol = await text(page, 'protocol');
    if (protocol !== 'chat') await fail(`tab ${name}: subprotocol ${JSON.stringify(protocol)}, not "chat"`, tabs);
  }
  ok('three tabs OPEN, subprotocol "chat" (offered: chat, superchat)');

  await logHas(b, '* bob joined ci-room');
  await logHas(a, '* bob joined ci-room');
  await a.fill('#text', 'hello from tab A');
  await a.click('#send');
  await logHas(b, 'alice: hello from tab A');
  await logHas(a, 'alice: hello from tab A');
  await b.fill('#text', 'hi alice, bob here');
  await b.click('#send');
  await logHas(a, 'bob: hi alice, bob here');
  ok('a text from tab A arrives in tab B (same room) and back in A, and B\'s reply in A');

  await c.fill('#text', 'carol here');
  await c.click('#send');
  await logHas(c, 'carol: carol here');
  if ((await logLines(c)).some((l) => l.includes('hello from tab A'))) await fail('tab C (another room) got tab A\'s text', tabs);
  if ((await logLines(a)).some((l) => l.includes('carol here'))) await fail('tab A got tab C\'s text (another room)', tabs);
  ok('rooms are topics: tab C in another room sees neither way');

  await a.fill('#text', 'bytes in a Blob');
  await a.click('#send-blob');
  await logHas(a, 'binary echo (ArrayBuffer, 15 B): bytes in a Blob');
  ok('a Blob sent from tab A comes back to A as binary');

  await a.click('#send-big');
  const peakNow = Number((await text(a, 'buffered-peak')).replace(/,/g, ''));
  await a.waitForFunction(() => ['intact', 'corrupt'].includes(document.getElementById('big-status').dataset.result), null, { timeout: BIG_WAIT });
  const status = await text(a, 'big-status');
  if (!status.startsWith('echo intact: 10,485,760 B')) await fail(`10 MiB echo: ${status}`, tabs);
  await waitText(a, 'buffered', '0');
  const peak = Number((await text(a, 'buffered-peak')).replace(/,/g, ''));
  if (!(peak > 0)) await fail(`bufferedAmount's peak shown: ${peak}`, tabs);
  const drained = await text(a, 'drained');
  if (!/^back to 0 after \d+ ms$/.test(drained)) await fail(`drained: ${drained}`, tabs);
  ok(`10 MiB binary echoed intact (${status.replace('echo intact: ', '')}); bufferedAmount peaked at ${peak.toLocaleString('en-US')} B (${peakNow.toLocaleString('en-US')} right after send) and went back to 0: ${drained}`);
  if ((await logLines(b)).some((l) => l.startsWith('binary'))) await fail('tab B got tab A\'s binary', tabs);
  ok('binary goes back to its sender alone (nothing in tab B)');

  mkdirSync(dirname(resolve(root, opt.screenshot)), { recursive: true });
  await a.screenshot({ path: resolve(root, opt.screenshot), fullPage: true, timeout: WAIT });
  console.log(`screenshot: ${opt.screenshot}`);

  const exited = new Promise((res) => server.once('exit', (code, sig) => res(code ?? sig)));
  server.kill('SIGTERM');
  for (const [name, page] of tabs) {
    await waitText(page, 'state', 'CLOSED');
    const got = [await text(page, 'close-code'), await text(page, 'close-reason'), await text(page, 'close-clean')];
    if (got.join('|') !== '1001|server shutdown|true') await fail(`tab ${name}: close code, reason, wasClean shown: ${got.join(', ')}; want 1001, server shutdown, true`, tabs);
  }
  ok('SIGTERM: every tab shows close 1001 "server shutdown", wasClean true');
  // the server waits up to its --shutdown-grace (2 s) for sockets that never sent a
  // request (Chromium opens a spare one) to close
  const code = await Promise.race([exited, new Promise((res) => setTimeout(() => res('still running'), WAIT).unref())]);
  if (code !== 0) await fail(`the server's exit after SIGTERM: ${code}`, tabs);
  ok('the server exited 0');
  if (errors.length) await fail(`errors in the pages: ${errors.join('; ')}`, tabs);
} catch (e) {
  await fail(e.stack || String(e), tabs);
}
clearTimeout(watchdog);
await browser.close().catch(() => {});
console.log(`chat page in Chromium: all ${checks} checks passed in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
