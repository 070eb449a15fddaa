// The page: picks a backend, loads the model and data, draws the panels, runs training in
// chunks. All model calls go through `serial` (the wasm side refuses overlapping calls).
import init, { Demo } from './pkg/supmae_web.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

// What a test (or a curious visitor, from the console) can read: window.supmae.
const state = {
  ready: false,
  error: null,
  backend: null,
  image: Number(params.get('image') ?? 0),
  pixels: null,
  ratio: Number(params.get('ratio') ?? 0.75),
  seed: Number(params.get('seed') ?? 0),
  lastResult: null,
  firstReconstructionMs: null,
  firstReconstructionAt: null,
  losses: [],
  imagesPerSecond: null,
  training: false,
  adapter: null,
};
window.supmae = state;

let demo = null;
let chain = Promise.resolve();
function serial(job) {
  const run = chain.then(job);
  chain = run.catch(() => {});
  return run;
}

function setStatus(text, kind) {
  const s = $('status');
  s.textContent = text;
  s.dataset.state = kind;
}

async function pickBackend() {
  const wanted = params.get('backend'); // "cpu", "webgpu" or nothing (WebGPU when there is an adapter)
  if (wanted === 'cpu') return 'cpu';
  if (navigator.gpu) {
    try {
      const adapter = await navigator.gpu.requestAdapter();
      if (adapter) {
        const i = adapter.info ?? {};
        state.adapter = [i.vendor, i.architecture, i.description].filter(Boolean).join(' ');
        return 'webgpu';
      }
    } catch (e) {
      console.warn('WebGPU adapter request failed', e);
    }
  }
  if (wanted === 'webgpu') throw new Error('WebGPU was asked for (?backend=webgpu) but navigator.gpu gives no adapter');
  return 'cpu';
}

async function bytes(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

function putRgba(canvas, rgba) {
  const ctx = canvas.getContext('2d');
  ctx.putImageData(new ImageData(new Uint8ClampedArray(rgba), 28, 28), 0, 0);
}

function putGray(canvas, gray) {
  const rgba = new Uint8Array(28 * 28 * 4);
  for (let i = 0; i < 28 * 28; i++) {
    rgba[4 * i] = rgba[4 * i + 1] = rgba[4 * i + 2] = gray[i];
    rgba[4 * i + 3] = 255;
  }
  putRgba(canvas, rgba);
}

// Reconstructs and classifies `pixels` with the current ratio and seed.
async function show(pixels) {
  state.pixels = pixels;
  const started = performance.now();
  const r = await serial(() => demo.reconstruct(pixels, state.ratio, state.seed));
  if (state.firstReconstructionMs === null) {
    state.firstReconstructionMs = performance.now() - started;
    state.firstReconstructionAt = performance.now(); // since the navigation started
  }
  state.lastResult = r;
  for (const k of ['original', 'masked', 'reconstruction', 'pasted']) putRgba($(k), r[k]);
  $('mask-info').textContent = `${r.removed} of ${r.patches} patches removed, mask seed ${state.seed}`;
  const better = 100 * (1 - r.maskedMse / Math.max(r.patchMeanMse, 1e-12));
  $('errors').textContent = `error on removed patches ${r.maskedMse.toFixed(4)}, flat patch-mean patches `
    + `${r.patchMeanMse.toFixed(4)} (${better >= 0 ? better.toFixed(0) + '% lower' : (-better).toFixed(0) + '% higher'})`;
  const top = $('top');
  top.replaceChildren(...r.top.map((g) => {
    const li = document.createElement('li');
    li.textContent = `${g.label} ${(100 * g.probability).toFixed(1)}%`;
    return li;
  }));
  return r;
}

function gallery() {
  const g = $('gallery');
  const n = Math.min(16, demo.testCount());
  for (let i = 0; i < n; i++) {
    const c = document.createElement('canvas');
    c.width = c.height = 28;
    c.title = `validation image ${i}: ${demo.testLabel(i)}`;
    c.dataset.index = String(i);
    putGray(c, demo.testImage(i));
    c.addEventListener('click', () => choose(i));
    g.appendChild(c);
  }
}

function choose(i) {
  state.image = i;
  for (const c of $('gallery').children) c.classList.toggle('chosen', Number(c.dataset.index) === i);
  return show(demo.testImage(i));
}

function drawing() {
  const canvas = $('draw');
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = '#000';
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  let down = false;
  const at = (e) => {
    const b = canvas.getBoundingClientRect();
    return [(e.clientX - b.left) * canvas.width / b.width, (e.clientY - b.top) * canvas.height / b.height];
  };
  canvas.addEventListener('pointerdown', (e) => { down = true; ctx.beginPath(); ctx.moveTo(...at(e)); });
  canvas.addEventListener('pointermove', (e) => {
    if (!down) return;
    ctx.lineTo(...at(e));
    ctx.strokeStyle = '#fff';
    ctx.lineWidth = 16;
    ctx.lineCap = ctx.lineJoin = 'round';
    ctx.stroke();
  });
  window.addEventListener('pointerup', () => { down = false; });
  $('clear-drawing').addEventListener('click', () => { ctx.fillStyle = '#000'; ctx.fillRect(0, 0, canvas.width, canvas.height); });
  $('use-drawing').addEventListener('click', () => {
    // Area-average the 196 px drawing down to 28x28 grey levels.
    const src = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    const f = canvas.width / 28;
    const gray = new Uint8Array(28 * 28);
    for (let y = 0; y < 28; y++) {
      for (let x = 0; x < 28; x++) {
        let sum = 0;
        for (let dy = 0; dy < f; dy++) for (let dx = 0; dx < f; dx++) sum += src[4 * ((y * f + dy) * canvas.width + x * f + dx)];
        gray[28 * y + x] = Math.round(sum / (f * f));
      }
    }
    for (const c of $('gallery').children) c.classList.remove('chosen');
    show(gray).catch(fail);
  });
}

function curve() {
  const c = $('curve');
  const ctx = c.getContext('2d');
  const w = c.width, h = c.height, pad = 36;
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, w, h);
  const ys = state.losses;
  ctx.fillStyle = '#5b6575';
  ctx.font = '12px system-ui, sans-serif';
  if (ys.length < 2) {
    ctx.fillText('training loss (rec + cls) per step appears here', pad, h / 2);
    return;
  }
  // A running mean (20 steps) over the raw losses.
  const smooth = ys.map((_, i) => {
    const from = Math.max(0, i - 19);
    let s = 0;
    for (let j = from; j <= i; j++) s += ys[j];
    return s / (i - from + 1);
  });
  const hi = Math.max(...ys), lo = Math.min(...ys);
  const x = (i) => pad + (w - pad - 8) * i / (ys.length - 1);
  const y = (v) => h - 20 - (h - 32) * (v - lo) / Math.max(hi - lo, 1e-9);
  ctx.strokeStyle = '#dde2ea';
  ctx.beginPath(); ctx.moveTo(pad, 8); ctx.lineTo(pad, h - 20); ctx.lineTo(w - 8, h - 20); ctx.stroke();
  ctx.fillText(hi.toFixed(3), 2, 16);
  ctx.fillText(lo.toFixed(3), 2, h - 22);
  ctx.fillText(`step ${ys.length}`, w - 70, h - 6);
  for (const [series, color, width] of [[ys, '#9fb4ff', 1], [smooth, '#2962ff', 2]]) {
    ctx.strokeStyle = color;
    ctx.lineWidth = width;
    ctx.beginPath();
    series.forEach((v, i) => (i ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v))));
    ctx.stroke();
  }
  ctx.lineWidth = 1;
}

async function trainLoop() {
  let chunk = 1; // steps per call, grown so one call takes about 150 ms
  let sinceRefresh = 0;
  const batch = Number($('batch').value);
  let firstCall = true;
  const timed = { images: 0, seconds: 0 };
  while (state.training) {
    const started = performance.now();
    const losses = await serial(() => demo.train(chunk, batch));
    const seconds = (performance.now() - started) / 1000;
    state.losses.push(...losses);
    // Throughput after the first call (which also compiles the GPU kernels).
    if (firstCall) {
      firstCall = false;
      state.imagesPerSecond = (chunk * batch) / seconds;
    } else {
      timed.images += chunk * batch;
      timed.seconds += seconds;
      state.imagesPerSecond = timed.images / timed.seconds;
    }
    $('speed').textContent = `${state.imagesPerSecond.toFixed(0)} images/s on ${state.backend}, step ${demo.steps()}, loss ${losses[losses.length - 1].toFixed(4)}`;
    curve();
    sinceRefresh += chunk;
    if (sinceRefresh >= 20 && state.pixels) {
      sinceRefresh = 0;
      await show(state.pixels);
    }
    chunk = Math.max(1, Math.min(20, Math.round(chunk * 0.15 / Math.max(seconds, 1e-3))));
    await new Promise((r) => setTimeout(r, 0)); // let the page draw and take clicks
  }
}

function controls() {
  $('ratio').value = String(state.ratio);
  $('ratio-value').textContent = state.ratio.toFixed(2);
  $('ratio').addEventListener('input', () => {
    state.ratio = Number($('ratio').value);
    $('ratio-value').textContent = state.ratio.toFixed(2);
    if (state.pixels) show(state.pixels).catch(fail);
  });
  $('new-mask').addEventListener('click', () => { state.seed += 1; show(state.pixels).catch(fail); });
  $('train').addEventListener('click', async () => {
    if (state.training) {
      state.training = false;
      $('train').textContent = 'Train';
      return;
    }
    if (demo.steps() === 0) {
      state.losses = [];
      await serial(() => demo.resetTraining(0));
    }
    state.training = true;
    $('train').textContent = 'Stop';
    trainLoop().catch(fail);
  });
  $('back').addEventListener('click', async () => {
    state.training = false;
    $('train').textContent = 'Train';
    await serial(() => demo.stopTraining());
    if (state.pixels) await show(state.pixels);
  });
  $('file').addEventListener('change', async () => {
    const file = $('file').files[0];
    if (!file) return;
    state.training = false;
    $('train').textContent = 'Train';
    try {
      const description = await serial(async () => demo.loadCheckpoint(new Uint8Array(await file.arrayBuffer()), file.name));
      $('file-status').textContent = `${file.name}: ${description}`;
      if (state.pixels) await show(state.pixels);
    } catch (e) {
      $('file-status').textContent = `${file.name}: ${e.message ?? e}`;
    }
  });
}

function fail(e) {
  console.error(e);
  state.error = String(e.message ?? e);
  setStatus(`Error: ${state.error}`, 'error');
}

async function main() {
  await init();
  const backend = await pickBackend();
  const [checkpoint, trainImages, trainLabels, testImages, testLabels] = await Promise.all([
    'assets/checkpoint.ckpt',
    'assets/train-images-idx3-ubyte.gz',
    'assets/train-labels-idx1-ubyte.gz',
    'assets/t10k-images-idx3-ubyte.gz',
    'assets/t10k-labels-idx1-ubyte.gz',
  ].map(bytes));
  demo = await Demo.create(backend, checkpoint, trainImages, trainLabels, testImages, testLabels);
  state.backend = demo.backend() + (state.adapter ? ` on ${state.adapter}` : '');
  $('backend').textContent = `Backend: ${state.backend}. Model: ${demo.describe()}.`;
  gallery();
  drawing();
  controls();
  curve();
  await choose(state.image);
  state.ready = true;
  setStatus(`Ready on ${state.backend}.`, 'ready');
}

// For tests: reconstruct and classify validation image `i` with the given ratio and seed.
state.run = (i, ratio, seed) => serial(() => demo.reconstruct(demo.testImage(i), ratio, seed));
// For measurements: `steps` training steps of `batch` images, resolving to their losses.
state.trainSteps = (steps, batch) => serial(() => demo.train(steps, batch));

main().catch(fail);
