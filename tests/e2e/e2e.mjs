// Real Netflux pages in headless Chromium, through the real sigver binary, over ws:// and wss://.
// run.sh starts this inside a private network namespace where 198.18.0.1 is the only address
// besides loopback, so every socket here (signaling, pages, WebRTC) stays on this machine.
// Prints one line per check and a last line `N passed, N failed`; exits 1 on any failure.
// The servers' and pages' logs follow a failure, or every run with E2E_VERBOSE=1.
import { spawn, execFileSync } from 'node:child_process';
import { createPublicKey, createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { statusPageChecks } from './status.mjs';

const HOST = '198.18.0.1';
const HERE = path.dirname(fileURLToPath(import.meta.url));
const SIGVER = process.env.SIGVER_BIN;
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
// Three heartbeat ticks without an answer end a connection on either side (docs/PROTOCOL.md 4),
// so a group that is still whole after 18 s has had heartbeats flowing both ways.
const SURVIVE_MS = 18_000;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sigver-e2e-'));
const logs = []; // server and page lines, printed after a failure or with E2E_VERBOSE=1

function log(source, line) {
  logs.push(`[${((performance.now()) / 1000).toFixed(1)}s ${source}] ${line}`);
}

// Starts the real binary on an ephemeral port and reads the port from its first log line.
function startSigver(name, extraArgs = []) {
  const child = spawn(SIGVER, ['-h', HOST, '-p', '0', ...extraArgs], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info,sigver=debug' }, // a line per connection event
  });
  return new Promise((resolve, reject) => {
    let buffered = '';
    child.stderr.setEncoding('utf8').on('data', (chunk) => {
      buffered += chunk;
      let nl;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        log(name, line);
        const m = line.match(/listening on \S+:(\d+)/);
        if (m) resolve({ child, port: Number(m[1]) });
      }
    });
    child.on('exit', (code) => reject(new Error(`${name} exited with ${code} before listening`)));
    child.on('error', reject);
  });
}

// A throwaway self-signed certificate for the test address. Chromium trusts it through an
// SPKI pin (a flag for this browser only), so nothing is added to any trust store.
function makeCertificate() {
  const key = path.join(tmp, 'key.pem');
  const cert = path.join(tmp, 'cert.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
    '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', `/CN=${HOST}`,
    '-addext', `subjectAltName=IP:${HOST}`], { stdio: 'ignore' });
  const spki = createPublicKey(fs.readFileSync(key)).export({ type: 'spki', format: 'der' });
  return { key, cert, spkiHash: createHash('sha256').update(spki).digest('base64') };
}

// The pages get an http origin on the test address. Netflux needs no secure context (it uses
// WebSocket, RTCPeerConnection and crypto.getRandomValues, all open to http pages), and an
// http page may open both ws:// and wss://, so one origin serves both schemes.
function startStatic() {
  const files = {
    '/': ['text/html', path.join(HERE, 'page.html')],
    '/netflux.js': ['text/javascript', path.join(HERE, 'node_modules/netflux/dist/netflux.browser.es5.umd.js')],
  };
  const server = http.createServer((req, res) => {
    const file = files[req.url];
    if (!file) return res.writeHead(404).end();
    res.writeHead(200, { 'content-type': file[0] }).end(fs.readFileSync(file[1]));
  });
  return new Promise((resolve) => server.listen(0, HOST, () => resolve(server)));
}

const results = [];
async function check(name, fn, timeoutMs = 20_000) {
  const start = performance.now();
  let timer;
  try {
    await Promise.race([fn(), new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs / 1000} s`)), timeoutMs);
    })]);
    results.push(true);
    console.log(`ok   ${name} (${((performance.now() - start) / 1000).toFixed(1)} s)`);
    return true;
  } catch (err) {
    results.push(false);
    console.log(`FAIL ${name}: ${err.message}`);
    if (!(err instanceof NotRun)) await snapshotPages();
    return false;
  } finally {
    clearTimeout(timer);
  }
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

// A step that needs an earlier one that failed: counted as failed, without running.
class NotRun extends Error {}
function needs(ok) {
  if (!ok) throw new NotRun('not run: the previous step failed');
}

let context;
let site;
const openPages = new Map(); // page -> label, for the snapshot taken when a check fails

async function openPage(label) {
  const page = await context.newPage();
  openPages.set(page, label);
  page.on('close', () => openPages.delete(page));
  page.on('console', (m) => log(label, `console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => log(label, `page error: ${e.message}`));
  await page.goto(site);
  return page;
}

// Logs what netflux and the spies say in every open page, to tell a server fault from a page's.
async function snapshotPages() {
  for (const [page, label] of openPages) {
    const state = page.evaluate(() => JSON.stringify(window.wg
      ? { myId: wg.myId, state: wg.state, signalingState: wg.signalingState, members: wg.members, signaling }
      : { signaling }));
    const late = new Promise((r) => setTimeout(() => r('(no answer)'), 2000));
    log(label, `at failure: ${await Promise.race([state, late]).catch((e) => e.message)}`);
  }
}

const until = (page, fn, arg) => page.waitForFunction(fn, arg, { polling: 100, timeout: 0 });

// Joins one page to the group and waits until it is a member (WebGroupState.JOINED = 1).
async function join(page, url, key) {
  await page.evaluate(([u, k]) => joinGroup(u, k), [url, key]);
  await until(page, () => wg.state === 1);
  return page.evaluate(() => wg.myId);
}

// Every page lists exactly the given ids as members, and the others as direct neighbours
// (a full mesh: one data channel to each other page).
async function fullMesh(pages, ids) {
  await Promise.all(pages.map((p, i) => until(p, ([all, others]) =>
    JSON.stringify([...wg.members].sort()) === JSON.stringify(all)
    && JSON.stringify([...wg.neighbors].sort()) === JSON.stringify(others),
  [[...ids].sort(), ids.filter((_, j) => j !== i).sort()])));
}

// Every page broadcasts one message; every other page must receive it from that sender.
async function everyoneHearsEveryone(pages, ids, tag) {
  await Promise.all(pages.map((p) => p.evaluate((t) => wg.send(`${t} from ${wg.myId}`), tag)));
  await Promise.all(pages.map((p, i) => until(p, ([t, others]) =>
    others.every((id) => received.some((m) => m.from === id && m.data === `${t} from ${id}`)),
  [tag, ids.filter((_, j) => j !== i)])));
}

// The data channels are really up, and on the test address (not loopback, not another host).
async function linksOnTestHost(pages) {
  for (const p of pages) {
    const pairs = await p.evaluate(() => connectedPairs());
    log('links', JSON.stringify(pairs));
    assert(pairs.length >= 1, 'a page has no connected WebRTC link');
    assert(pairs.flat().every((a) => a === HOST), `WebRTC link off the test host: ${JSON.stringify(pairs)}`);
  }
}

// Joining, meshing, messaging and staying alive, as an application does, on one scheme.
// The steps share their pages, so a failed step makes the later ones fail without running.
async function groupChecks(scheme, url) {
  const key = `e2e-${scheme}`; // each run has its own servers, so no key is left over
  const pages = [];
  const ids = [];
  let ok = await check(`${scheme}: two pages join one key, see each other, exchange messages over WebRTC`, async () => {
    for (const n of [1, 2]) pages.push(await openPage(`${scheme} page ${n}`));
    for (const p of pages) ids.push(await join(p, url, key));
    await fullMesh(pages, ids);
    await everyoneHearsEveryone(pages, ids, 'hello');
    await linksOnTestHost(pages);
  });
  ok = await check(`${scheme}: a third page makes a full mesh; every message reaches every other page`, async () => {
    needs(ok);
    pages.push(await openPage(`${scheme} page 3`));
    ids.push(await join(pages[2], url, key));
    await fullMesh(pages, ids);
    await everyoneHearsEveryone(pages, ids, 'mesh');
    await linksOnTestHost(pages);
  }) && ok;
  await check(`${scheme}: the group lives ${SURVIVE_MS / 1000} s on heartbeats both ways; a fourth page still joins`, async () => {
    needs(ok);
    await new Promise((r) => setTimeout(r, SURVIVE_MS));
    for (const p of pages) {
      const s = await p.evaluate(() => signaling);
      log('signaling', JSON.stringify(s));
      // One signaling socket, never closed: netflux closes its own after three missed server
      // heartbeats, the server closes with 4742 after three missed client heartbeats.
      assert(s.opened === 1 && s.closes.length === 0, `signaling socket reopened or closed: ${JSON.stringify(s)}`);
      assert(s.heartbeatsIn >= 3 && s.heartbeatsOut >= 3, `too few heartbeats: ${JSON.stringify(s)}`);
    }
    await fullMesh(pages, ids);
    pages.push(await openPage(`${scheme} page 4`));
    ids.push(await join(pages[3], url, key));
    await fullMesh(pages, ids);
    await everyoneHearsEveryone(pages, ids, 'later');
    await linksOnTestHost(pages);
  }, 20_000 + SURVIVE_MS);
  await Promise.all(pages.map((p) => p.close()));
}

// What a browser's own WebSocket reports when the server refuses it (docs/PROTOCOL.md 7).
async function closeCodeChecks(scheme, url) {
  const page = await openPage(`${scheme} close codes`);
  const cases = [
    ['an empty key closes with 4741', `${url}/`, undefined, 4741],
    ['a text frame closes with 4743', `${url}/e2e-text`, 'not protobuf', 4743],
  ];
  for (const [name, target, text, code] of cases) {
    await check(`${scheme}: browser WebSocket: ${name}`, async () => {
      const close = await page.evaluate(([u, t]) => closeOf(u, t), [target, text]);
      assert(close.code === code && close.wasClean && close.reason !== '',
        `expected a clean close ${code} with a reason, got ${JSON.stringify(close)}`);
    }, 10_000);
  }
  await page.close();
}

// Who may use the server (--allow-origin): a page from a listed origin joins; a server that
// lists another origin refuses the page's upgrade, which the browser reports as a failed
// WebSocket (1006: the 403 never becomes a WebSocket).
async function originChecks(origin) {
  const allowed = await startSigver('sigver allow-origin', ['--allow-origin', origin]);
  const elsewhere = await startSigver('sigver other-origin', ['--allow-origin', 'https://app.example.org']);
  try {
    const page = await openPage('origin');
    await check(`ws: --allow-origin: a page from a listed origin (${origin}) joins a group`, async () => {
      await join(page, `ws://${HOST}:${allowed.port}`, 'e2e-origin');
    });
    await check('ws: --allow-origin: a page from another origin is refused', async () => {
      const close = await page.evaluate((u) => closeOf(u), `ws://${HOST}:${elsewhere.port}/e2e-origin`);
      assert(close.code === 1006 && !close.wasClean,
        `expected the upgrade refused (1006), got ${JSON.stringify(close)}`);
    }, 10_000);
    await page.close();
  } finally {
    allowed.child.kill();
    elsewhere.child.kill();
  }
}

// Only signed keys (--key-secret): a page with a key minted by `sigver sign-key` joins; a
// page with a forged key sees a clean close 4741 with its reason.
async function signedKeyChecks() {
  const secrets = path.join(tmp, 'key-secrets');
  fs.writeFileSync(secrets, 'e2e-secret-one\n');
  const server = await startSigver('sigver key-secret', ['--key-secret', secrets]);
  const signed = execFileSync(SIGVER, ['sign-key', 'e2e-room', '--key-secret', secrets]).toString().trim();
  try {
    const page = await openPage('signed keys');
    const url = `ws://${HOST}:${server.port}`;
    await check(`ws: --key-secret: a page with a signed key (${signed}) joins a group`, async () => {
      await join(page, url, signed);
    });
    await check('ws: --key-secret: a page with a forged key sees 4741', async () => {
      const forged = `e2e-room.${'A'.repeat(43)}`;
      const close = await page.evaluate((u) => closeOf(u), `${url}/${forged}`);
      assert(close.code === 4741 && close.wasClean && close.reason === 'Key not signed',
        `expected a clean close 4741 "Key not signed", got ${JSON.stringify(close)}`);
    }, 10_000);
    await page.close();
  } finally {
    server.child.kill();
  }
}

async function main() {
  const cert = makeCertificate();
  const ws = await startSigver('sigver ws');
  const wss = await startSigver('sigver wss', ['-k', cert.key, '-c', cert.cert]);
  const web = await startStatic();
  site = `http://${HOST}:${web.address().port}/`;
  // Chromium insists on its own user data dir for the SPKI pin to be honoured.
  context = await chromium.launchPersistentContext(path.join(tmp, 'profile'), {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // Host candidates carry the test address itself, not a random .local name that getStats
      // reports as an empty address: that lets linksOnTestHost see where the links run.
      '--disable-features=WebRtcHideLocalIpsWithMdns',
      `--ignore-certificate-errors-spki-list=${cert.spkiHash}`],
  });
  try {
    for (const [scheme, port] of [['ws', ws.port], ['wss', wss.port]]) {
      await groupChecks(scheme, `${scheme}://${HOST}:${port}`);
      await closeCodeChecks(scheme, `${scheme}://${HOST}:${port}`);
    }
    await originChecks(`http://${HOST}:${web.address().port}`);
    await signedKeyChecks();
    await statusPageChecks({ context, startSigver, check, assert, needs, log, host: HOST });
  } finally {
    await context.close();
    ws.child.kill();
    wss.child.kill();
    web.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

try {
  await main();
} catch (err) {
  results.push(false);
  console.log(`FAIL setup: ${err.stack}`);
}
const failed = results.filter((r) => !r).length;
if (failed || process.env.E2E_VERBOSE) console.log(`--- log of the servers and pages ---\n${logs.join('\n')}\n---`);
console.log(`${results.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
