// The status page in a real browser: traffic goes through a server sampling every second,
// then the page (reloaded, so its history comes from /status.json alone) must show charts
// whose points follow that traffic. Screenshots land in tests/e2e/out/ (E2E_OUT).
import fs from 'node:fs';
import path from 'node:path';

// Runs in a page: `pairs` member/joiner pairs relay contents as fast as they are answered
// for `ms`, beside two peers closed for what they send (a text frame: 4743; a message over
// --max-message-size: 1009). Raw browser WebSockets and hand-encoded protobuf
// (proto/sigver.proto), so the traffic is exactly what the test says.
async function traffic({ url, pairs, ms }) {
  const varint = (n) => { const out = []; while (n > 127) { out.push((n & 127) | 128); n >>>= 7; } out.push(n); return out; };
  const field = (tag, bytes) => [tag, ...varint(bytes.length), ...bytes];
  const connect = (id) => new Uint8Array(field(0x1a, [0x08, ...varint(id)]));
  const content = (to, data) => new Uint8Array(field(0x12, [0x10, ...varint(to), ...field(0x22, data)]));
  const heartbeat = new Uint8Array([0x08, 0x01]);
  function parse(buffer) {
    const b = new Uint8Array(buffer);
    let i = 0;
    const read = () => { let n = 0, shift = 0, x; do { x = b[i++]; n += (x & 127) * 2 ** shift; shift += 7; } while (x & 128); return n; };
    const tag = read();
    if (tag === 0x08) return { heartbeat: true };
    if (tag === 0x20) return { connected: read() === 1 };
    if (tag !== 0x12) return {};
    const end = read() + i;
    const m = { sender: 0 };
    while (i < end) {
      const t = read();
      if (t === 0x08) m.sender = read();
      else if (t === 0x22) i += read();
      else read();
    }
    return m;
  }
  const sockets = [];
  // Opens a peer; `on` gets every decoded message except heartbeats, which it answers.
  const peer = (key, on) => new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url}/${key}`);
    ws.binaryType = 'arraybuffer';
    sockets.push(ws);
    ws.onmessage = (e) => { const m = parse(e.data); if (m.heartbeat) ws.send(heartbeat); else on(m, ws); };
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error(`WebSocket to ${key} failed`));
  });
  const joined = (ws, id) => new Promise((resolve) => { ws.onjoin = resolve; ws.send(connect(id)); });
  const data = [...new TextEncoder().encode('candidate:1 1 udp 2122260223 198.18.0.1 50000 typ host')];
  const until = performance.now() + ms;
  let relayed = 0;
  await Promise.all(Array.from({ length: pairs }, async (_, n) => {
    const member = await peer(`status-${n}`, (m, ws) => {
      if ('connected' in m) ws.onjoin();
      else if ('sender' in m) ws.send(content(m.sender, data));
    });
    await joined(member, 1);
    let done;
    const finished = new Promise((resolve) => { done = resolve; });
    const joiner = await peer(`status-${n}`, (m, ws) => {
      if ('connected' in m) return ws.onjoin();
      relayed += 2;
      if (performance.now() < until) ws.send(content(0, data)); else done();
    });
    await joined(joiner, 2);
    joiner.send(content(0, data));
    await finished;
  }).concat([
    peer('status-text', () => {}).then((ws) => ws.send('not protobuf')),
    peer('status-big', () => {}).then((ws) => ws.send(new Uint8Array(5000))),
  ]));
  for (const ws of sockets) ws.close();
  return relayed;
}

// What the page's charts hold: for each chart, its series' values as drawn and the number of
// points its polylines and dots really have.
function charts() {
  const out = {};
  for (const svg of document.querySelectorAll('svg[data-chart]')) {
    const series = {};
    for (const g of svg.querySelectorAll('g[data-series]')) {
      const points = [...g.querySelectorAll('polyline')].reduce((n, p) => n + p.points.numberOfItems, 0)
        + g.querySelectorAll('circle').length;
      const values = g.dataset.values.split(',').map((v) => (v === '' ? null : Number(v)));
      series[g.dataset.series] = { values, points };
    }
    out[svg.dataset.chart] = series;
  }
  return out;
}

export async function statusPageChecks({ context, startSigver, check, assert, needs, log, host }) {
  const outDir = process.env.E2E_OUT || path.join(path.dirname(new URL(import.meta.url).pathname), 'out');
  fs.mkdirSync(outDir, { recursive: true });
  const server = await startSigver('sigver status', ['--status-interval', '1000', '--max-message-size', '4K',
    '--metrics-allow', `${host}/32`]);
  const site = `http://${host}:${server.port}/`;
  try {
    const page = await context.newPage();
    page.on('pageerror', (e) => log('status page', `page error: ${e.message}`));
    await page.setViewportSize({ width: 1100, height: 900 });
    const ok = await check('status page: traffic through the server shows in the charts, after a reload too', async () => {
      await page.goto(site);
      await new Promise((r) => setTimeout(r, 3000)); // quiet samples first
      const load = await context.newPage();
      await load.goto(site);
      const relayed = await load.evaluate(traffic, { url: `ws://${host}:${server.port}`, pairs: 8, ms: 4000 });
      await load.close();
      log('status page', `relayed ${relayed} contents`);
      assert(relayed > 200, `only ${relayed} contents relayed`);
      await new Promise((r) => setTimeout(r, 3500)); // quiet samples after
      await page.reload();
      await page.waitForFunction(() => document.querySelectorAll('svg[data-chart="peers"] g[data-series]').length === 3);
      const c = await page.evaluate(charts);
      log('status page', JSON.stringify(c));
      const conns = c.peers.connections.values;
      const rate = c.relayed.relayed_per_second.values;
      const p99 = c.latency.latency_p99_us.values;
      assert(conns.length >= 8 && rate.length === conns.length && p99.length === conns.length, 'columns of unequal length');
      for (const [name, s] of Object.entries({ ...c.peers, ...c.relayed })) {
        assert(s.points === s.values.length, `${name}: ${s.points} points drawn for ${s.values.length} values`);
      }
      // The page's own requests (/metrics, /status.json) are connections while they last.
      assert(conns[0] <= 2 && rate[0] === 0 && p99[0] === null, `the first samples are not quiet: ${conns[0]} ${rate[0]} ${p99[0]}`);
      assert(Math.max(...conns) >= 16, `connections peak at ${Math.max(...conns)}, not the 16 of the pairs`);
      assert(Math.max(...c.peers.groups.values) >= 8, 'groups do not show the 8 keys');
      const busy = rate.map((r, i) => (r > 0 ? i : -1)).filter((i) => i >= 0);
      assert(busy.length >= 3, `only ${busy.length} samples with relays`);
      // The points follow the traffic: relays only in intervals the pairs were connected in
      // (at its start or its end), with a latency for those samples, and the rates add up to
      // what the pairs relayed.
      for (const i of busy) {
        assert(Math.max(conns[i], conns[i - 1] ?? 0) >= 3 && p99[i] > 0,
          `sample ${i}: rate ${rate[i]}, connections ${conns[i - 1]} then ${conns[i]}, p99 ${p99[i]}`);
      }
      // Each rate over its interval as long as it really was (the sample times of the same
      // ring: a loaded machine stretches intervals).
      const times = (await page.evaluate(async () => (await (await fetch('/status.json')).json()).samples.time));
      const sum = rate.reduce((a, r, i) => a + (i ? r * (times[i] - times[i - 1]) : 0), 0);
      assert(Math.abs(sum - relayed) <= relayed * 0.01 + 2, `rates sum to ${sum}, ${relayed} relayed`);
      assert(conns.at(-1) <= 2 && rate.at(-1) === 0, 'the last sample is not quiet');
      assert(c.closes['4743'] && c.closes['1009'], `closes by code: ${Object.keys(c.closes)}`);
      assert(c.closes['4743'].values.reduce((a, n) => a + n, 0) === 1, 'one 4743');
      assert(c.limits.max_message_size, `limit hits: ${Object.keys(c.limits)}`);
      const big = await page.evaluate(() => ['connections', 'groups', 'version', 'state'].map((id) => document.getElementById(id).textContent));
      assert(Number(big[0]) <= 2 && big[1] === '0' && big[2] !== '' && big[3] === 'ready', `current values: ${big}`);
      await new Promise((r) => setTimeout(r, 2200)); // live figures from two scrapes
      await page.screenshot({ path: path.join(outDir, 'status-page.png'), fullPage: true });
    }, 40_000);
    await check('status page: readable on a phone (no sideways scrolling, charts fit)', async () => {
      needs(ok);
      const phone = await context.newPage();
      await phone.setViewportSize({ width: 390, height: 844 });
      await phone.goto(site);
      await phone.waitForFunction(() => document.querySelectorAll('svg[data-chart] g[data-series]').length >= 6);
      const fit = await phone.evaluate(() => ({
        page: document.documentElement.scrollWidth,
        widest: Math.max(...[...document.querySelectorAll('svg, .tile')].map((e) => e.getBoundingClientRect().right)),
        inner: window.innerWidth,
      }));
      assert(fit.page <= fit.inner && fit.widest <= fit.inner, `wider than the screen: ${JSON.stringify(fit)}`);
      await phone.screenshot({ path: path.join(outDir, 'status-page-phone.png'), fullPage: true });
      await phone.close();
    });
    await page.close();
  } finally {
    server.child.kill();
  }
}
