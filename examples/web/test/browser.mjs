// The page in a real browser (Debian's Chromium, headless, driven by playwright-core), on
// both backends: WebGPU (SwiftShader, with --enable-unsafe-webgpu) and the CPU fallback
// (without the flag requestAdapter() gives null). Checks, on each:
//   - the reconstruction of validation image 0 (mask ratio 0.75, seed 7) equals the native
//     `supmae reconstruct` picture of the same checkpoint, pixel by pixel within a tolerance,
//     and its error on removed patches equals the native one;
//   - the classification branch's top class of validation images 0-7 equals the native
//     `classify` example's;
//   - "Train" from random weights lowers the loss (300 steps on the CPU, 12 on WebGPU,
//     which SwiftShader runs slowly), and both backends' losses agree step by step;
//   - a screenshot is not blank (the WebGPU one is written to docs/web.png).
// Prints one JSON line of measurements per backend (time to first reconstruction, training
// images/s, sizes) for docs/benchmarks.md.
//
// usage: node browser.mjs DIST SCREENSHOT.png    (scripts/web.sh test runs it)
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const [dist, screenshotPath] = process.argv.slice(2);
// Training steps per backend. SwiftShader runs WebGPU on the CPU, one shader invocation at
// a time: a step of 8 images takes seconds there, against milliseconds for Flex in wasm.
const CPU_STEPS = Number(process.env.SUPMAE_WEB_STEPS ?? 300);
const GPU_STEPS = Number(process.env.SUPMAE_WEB_GPU_STEPS ?? 12);
// The loss must fall: the mean of the last steps below FALL times that of the first ones.
const FALL = 0.9;
// Both backends start from the same weights (drawn on Flex) and take the same batches and
// masks, so their first steps must agree. f32 rounding differs between WGSL on SwiftShader
// and Flex; after a dozen AdamW steps the losses agree to about 1e-5 relative here.
const TRAJECTORY_TOL = 1e-3;
const port = 8000 + Math.floor(Math.random() * 1000);

// Tolerances. The page runs Burn's generic ops (wasm Flex, or WGSL shaders on SwiftShader);
// native runs our fused AVX2/AVX-512 kernels. Both are f32 with different summation orders,
// so values differ in the last few bits (relative 1e-6 to 1e-5). A grey level is a rounded
// value of [0, 255]: such a difference moves it to the neighbouring level only when the
// value sits within about 1e-3 of a rounding boundary, so at most 1 level, on few pixels.
const MAX_LEVEL_DIFF = 1;
const MAX_SHARE_OFF = 0.02; // share of pixels allowed one level off
const MSE_TOL = 2e-4; // the native program prints the error with 4 decimals (±5e-5), plus f32 noise

function fail(message) {
  console.error(`browser test FAILED: ${message}`);
  process.exitCode = 1;
  throw new Error(message);
}

function nativeResults() {
  const rec = readFileSync(join(dist, 'native/reconstruct.txt'), 'utf8');
  const m = rec.match(/error on removed patches ([0-9.]+) vs ([0-9.]+)/);
  if (!m) fail(`no error line in native/reconstruct.txt:\n${rec}`);
  const top = {};
  for (const line of readFileSync(join(dist, 'native/classify.txt'), 'utf8').split('\n')) {
    const c = line.match(/^test image (\d+): ([^,]+?) [0-9.]+%/);
    if (c) top[Number(c[1])] = c[2];
  }
  if (Object.keys(top).length < 8) fail('the native classify output has fewer than 8 images');
  return { maskedMse: Number(m[1]), patchMeanMse: Number(m[2]), top };
}

async function serve() {
  const server = spawn('python3', ['-m', 'http.server', String(port), '--bind', '127.0.0.1', '--directory', dist], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/index.html`);
      if (r.ok) return server;
    } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  server.kill();
  fail('the static server did not start');
}

async function waitFor(page, predicate, arg, seconds, what) {
  try {
    await page.waitForFunction(predicate, arg, { timeout: seconds * 1000, polling: 250 });
  } catch {
    const error = await page.evaluate(() => window.supmae?.error);
    fail(`${what} within ${seconds} s${error ? `: page error: ${error}` : ''}`);
  }
}

async function check(browser, backend, native) {
  const page = await browser.newPage({ viewport: { width: 1000, height: 1400 } });
  const logs = [];
  page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
  try {
    await page.goto(`http://127.0.0.1:${port}/?backend=${backend}&image=0&seed=7&ratio=0.75`);
    await waitFor(page, () => window.supmae && (window.supmae.ready || window.supmae.error), null, 300, 'the page was not ready');
    const s = await page.evaluate(() => ({ error: window.supmae.error, backend: window.supmae.backend, firstAt: window.supmae.firstReconstructionAt, firstMs: window.supmae.firstReconstructionMs }));
    if (s.error) fail(`${backend}: page error: ${s.error}`);
    const expected = backend === 'webgpu' ? /^WebGPU/ : /^Flex/;
    if (!expected.test(s.backend)) fail(`${backend}: the page runs on "${s.backend}"`);

    // 1. The reconstruction against the native picture (a grid: 4 px gaps, 28 px cells).
    const cmp = await page.evaluate(async () => {
      const r = window.supmae.lastResult;
      const img = await createImageBitmap(await (await fetch('native/reconstruction.png')).blob());
      const c = new OffscreenCanvas(img.width, img.height);
      const ctx = c.getContext('2d');
      ctx.drawImage(img, 0, 0);
      const out = { maxDiff: 0, off: 0, total: 0, maskedMse: r.maskedMse, removed: r.removed, patches: r.patches, top: r.top };
      ['original', 'masked', 'reconstruction', 'pasted'].forEach((k, col) => {
        const cell = ctx.getImageData(4 + col * 32, 4, 28, 28).data;
        for (let i = 0; i < cell.length; i += 4) {
          const d = Math.abs(cell[i] - r[k][i]);
          out.maxDiff = Math.max(out.maxDiff, d);
          if (d > 0) out.off += 1;
          out.total += 1;
        }
      });
      return out;
    });
    if (cmp.removed !== 12 || cmp.patches !== 16) fail(`${backend}: ${cmp.removed} of ${cmp.patches} patches removed, expected 12 of 16`);
    if (cmp.maxDiff > MAX_LEVEL_DIFF || cmp.off > MAX_SHARE_OFF * cmp.total) {
      fail(`${backend}: reconstruction differs from native: max ${cmp.maxDiff} grey levels, ${cmp.off} of ${cmp.total} pixels off`);
    }
    if (Math.abs(cmp.maskedMse - native.maskedMse) > MSE_TOL) {
      fail(`${backend}: error on removed patches ${cmp.maskedMse} vs native ${native.maskedMse}`);
    }

    // 2. The top class of validation images 0-7.
    const tops = await page.evaluate(async () => {
      const out = [];
      for (let i = 0; i < 8; i++) out.push((await window.supmae.run(i, 0.75, 0)).top[0].label);
      return out;
    });
    tops.forEach((label, i) => {
      if (label !== native.top[i]) fail(`${backend}: image ${i}: top class ${label}, native ${native.top[i]}`);
    });

    // 3. Training from random weights (seed 0, batch 8): press "Train", wait for the steps,
    // press it again.
    const steps = backend === 'webgpu' ? GPU_STEPS : CPU_STEPS;
    await page.selectOption('#batch', '8');
    await page.click('#train');
    await waitFor(page, (n) => window.supmae.losses.length >= n || window.supmae.error, steps, 900, `${steps} training steps did not run`);
    await page.click('#train');
    const t = await page.evaluate(() => ({ losses: window.supmae.losses, ips: window.supmae.imagesPerSecond, error: window.supmae.error }));
    if (t.error) fail(`${backend}: training: ${t.error}`);
    const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const w = Math.min(20, Math.floor(t.losses.length / 3));
    const first = mean(t.losses.slice(0, w));
    const last = mean(t.losses.slice(-w));
    if (!(last < FALL * first)) fail(`${backend}: the loss did not fall: first ${w} steps ${first.toFixed(4)}, last ${w} ${last.toFixed(4)}`);

    // 4. Back to the pre-trained model, then a screenshot that is not blank.
    await page.click('#back');
    await waitFor(page, () => window.supmae.training === false, null, 60, 'training did not stop');
    await page.waitForTimeout(1500);
    const png = await page.screenshot({ fullPage: true });
    const blank = await page.evaluate(async (b64) => {
      const img = await createImageBitmap(await (await fetch(`data:image/png;base64,${b64}`)).blob());
      const c = new OffscreenCanvas(img.width, img.height);
      const ctx = c.getContext('2d');
      ctx.drawImage(img, 0, 0);
      const d = ctx.getImageData(0, 0, img.width, img.height).data;
      const colours = new Set();
      for (let i = 0; i < d.length; i += 4 * 7) colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
      return colours.size;
    }, png.toString('base64'));
    if (blank < 50) fail(`${backend}: the screenshot has ${blank} colours: blank?`);
    if (backend === 'webgpu' && screenshotPath) writeFileSync(screenshotPath, png);

    const result = {
      backend: s.backend,
      first_reconstruction_ms: Math.round(s.firstAt),
      reconstruct_call_ms: Math.round(s.firstMs),
      train_images_per_s: Number(t.ips.toFixed(1)),
      steps: t.losses.length,
      loss_first: Number(first.toFixed(4)),
      loss_last: Number(last.toFixed(4)),
      pixels_off: cmp.off,
      max_level_diff: cmp.maxDiff,
      masked_mse: cmp.maskedMse,
      native_masked_mse: native.maskedMse,
    };
    console.log(JSON.stringify(result));
    return t.losses;
  } catch (e) {
    console.error(logs.slice(-30).join('\n'));
    throw e;
  } finally {
    await page.close();
  }
}

const native = nativeResults();
const server = await serve();
const wasmBytes = statSync(join(dist, 'pkg/supmae_web_bg.wasm')).size;
console.log(JSON.stringify({ wasm_bytes: wasmBytes }));
let status = 0;
try {
  const losses = {};
  for (const backend of ['webgpu', 'cpu']) {
    const args = ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'];
    if (backend === 'webgpu') args.push('--enable-unsafe-webgpu');
    const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args });
    try {
      losses[backend] = await check(browser, backend, native);
    } finally {
      await browser.close();
    }
  }
  let worst = 0;
  losses.webgpu.forEach((l, i) => {
    const rel = Math.abs(l - losses.cpu[i]) / Math.abs(losses.cpu[i]);
    worst = Math.max(worst, rel);
    if (!(rel <= TRAJECTORY_TOL)) fail(`training step ${i + 1}: loss ${l} on WebGPU, ${losses.cpu[i]} on the CPU`);
  });
  console.log(JSON.stringify({ trajectory_steps: losses.webgpu.length, worst_relative_loss_difference: worst }));
  const budget = Number(process.env.SUPMAE_WEB_SIZE_BUDGET ?? 10_000_000);
  if (budget > 0 && wasmBytes > budget) fail(`the wasm is ${wasmBytes} bytes, over the ${budget}-byte budget`);
  console.log('browser test passed on webgpu and cpu');
} catch (e) {
  status = 1;
} finally {
  server.kill();
}
process.exit(status || process.exitCode || 0);
