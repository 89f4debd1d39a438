// Hand-written SVG charts for the overview: throughput (stacked bars of completed and failed
// jobs per bucket) and failure rate (a line over the buckets that finished any job).

import { s } from './dom.js';
import { fmtClock, fmtNumber, fmtTime } from './format.js';

const W = 560;
const H = 180;
const M = { top: 10, right: 10, bottom: 22, left: 38 };
const PLOT_W = W - M.left - M.right;
const PLOT_H = H - M.top - M.bottom;

/** A "nice" step (1, 2, 2.5, 5 × 10^n) near `raw`. */
function niceStep(raw) {
  if (raw <= 0) return 1;
  const exp = 10 ** Math.floor(Math.log10(raw));
  const f = raw / exp;
  const nice = f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10;
  return nice * exp;
}

/** Axis ticks from 0 to at least `max`, about four of them. */
function ticks(max, { integer = true } = {}) {
  let step = niceStep(max / 4);
  if (integer) step = Math.max(1, Math.ceil(step));
  const top = Math.max(step, Math.ceil(max / step) * step);
  const out = [];
  for (let v = 0; v <= top + step / 2; v += step) out.push(v);
  return { top, values: out };
}

function frame(label) {
  return s('svg', {
    class: 'chart',
    viewBox: `0 0 ${W} ${H}`,
    role: 'img',
    'aria-label': label,
    preserveAspectRatio: 'xMidYMid meet',
  });
}

function yAxis(svg, { top, values }, format) {
  const y = (v) => M.top + PLOT_H - (v / top) * PLOT_H;
  for (const v of values) {
    svg.append(
      s('line', { class: 'grid', x1: M.left, x2: W - M.right, y1: y(v), y2: y(v) }),
      s('text', { class: 'axis-label', x: M.left - 6, y: y(v) + 4, 'text-anchor': 'end' }, format(v)),
    );
  }
  return y;
}

function xAxis(svg, buckets, bandWidth) {
  if (!buckets.length) return;
  const first = new Date(buckets[0].start).getTime();
  const last = new Date(buckets[buckets.length - 1].start).getTime();
  const span = last - first;
  const bucketMs = buckets.length > 1 ? span / (buckets.length - 1) : 60000;
  const opts = { date: span > 86400000, seconds: bucketMs < 60000 };
  const every = Math.max(1, Math.ceil(buckets.length / 6));
  buckets.forEach((b, i) => {
    if (i % every !== 0) return;
    const x = M.left + i * bandWidth + bandWidth / 2;
    // Labels near the right edge end there rather than overflow it.
    const anchor = x > W - M.right - 24 ? 'end' : 'middle';
    svg.append(s('text', { class: 'axis-label', x: anchor === 'end' ? W - M.right : x, y: H - 6, 'text-anchor': anchor }, fmtClock(b.start, opts)));
  });
  svg.append(s('line', { class: 'axis', x1: M.left, x2: W - M.right, y1: M.top + PLOT_H, y2: M.top + PLOT_H }));
}

function emptyMessage(svg, text) {
  svg.append(s('text', { class: 'chart-empty', x: M.left + PLOT_W / 2, y: M.top + PLOT_H / 2, 'text-anchor': 'middle' }, text));
}

/** Completed and failed jobs per bucket, stacked. */
export function throughputChart(buckets) {
  const svg = frame('Throughput: jobs completed and failed per interval');
  const n = Math.max(1, buckets.length);
  const band = PLOT_W / n;
  const barW = Math.max(1, Math.min(band * 0.75, 28));
  const max = Math.max(0, ...buckets.map((b) => b.completed + b.failed));
  const y = yAxis(svg, ticks(max), fmtNumber);
  const base = M.top + PLOT_H;
  buckets.forEach((b, i) => {
    const x = M.left + i * band + (band - barW) / 2;
    const group = s('g', { class: 'bar' },
      s('title', null, `${fmtTime(b.start)} — ${fmtNumber(b.completed)} completed, ${fmtNumber(b.failed)} failed`),
      s('rect', { class: 'hover-band', x: M.left + i * band, y: M.top, width: band, height: PLOT_H }));
    if (b.completed > 0) {
      group.append(s('rect', { class: 'bar-completed', x, width: barW, y: y(b.completed), height: base - y(b.completed) }));
    }
    if (b.failed > 0) {
      const top = y(b.completed + b.failed);
      group.append(s('rect', { class: 'bar-failed', x, width: barW, y: top, height: y(b.completed) - top }));
    }
    svg.append(group);
  });
  xAxis(svg, buckets, band);
  if (max === 0) emptyMessage(svg, 'No job finished in this window');
  return svg;
}

/** Share of finished jobs that failed (dead-lettered), per bucket; gaps where none finished. */
export function failureRateChart(buckets) {
  const svg = frame('Failure rate: share of finished jobs that failed, per interval');
  const n = Math.max(1, buckets.length);
  const band = PLOT_W / n;
  const rates = buckets.map((b) => {
    const total = b.completed + b.failed;
    return total > 0 ? (b.failed / total) * 100 : null;
  });
  const max = Math.max(0, ...rates.filter((r) => r !== null));
  // At least 0–4% so a few failures do not fill the chart; at most 100%.
  const y = yAxis(svg, ticks(Math.min(100, Math.max(max, 4)), { integer: false }), (v) => `${v}%`);
  const cx = (i) => M.left + i * band + band / 2;

  // Split into runs of consecutive buckets that have a rate, one path (and area) per run.
  const runs = [];
  let current = [];
  rates.forEach((r, i) => {
    if (r === null) {
      if (current.length) runs.push(current);
      current = [];
    } else {
      current.push(i);
    }
  });
  if (current.length) runs.push(current);
  const base = M.top + PLOT_H;
  for (const run of runs) {
    const points = run.map((i) => `${cx(i).toFixed(1)},${y(rates[i]).toFixed(1)}`);
    const area = `M${cx(run[0]).toFixed(1)},${base} L${points.join(' L')} L${cx(run[run.length - 1]).toFixed(1)},${base} Z`;
    svg.append(s('path', { class: 'rate-area', d: area }));
    if (run.length > 1) svg.append(s('path', { class: 'rate-line', d: `M${points.join(' L')}` }));
  }
  rates.forEach((r, i) => {
    const b = buckets[i];
    const group = s('g', { class: 'bar' },
      s('title', null, r === null
        ? `${fmtTime(b.start)} — no job finished`
        : `${fmtTime(b.start)} — ${r.toFixed(1)}% failed (${fmtNumber(b.failed)} of ${fmtNumber(b.completed + b.failed)})`),
      s('rect', { class: 'hover-band', x: M.left + i * band, y: M.top, width: band, height: PLOT_H }));
    if (r !== null) group.append(s('circle', { class: 'rate-dot', cx: cx(i), cy: y(r), r: 2.5 }));
    svg.append(group);
  });
  xAxis(svg, buckets, band);
  if (rates.every((r) => r === null)) emptyMessage(svg, 'No job finished in this window');
  return svg;
}
