// Formatting of times, durations, numbers and JSON for display.

const pad = (n, width = 2) => String(n).padStart(width, '0');
const numberFormat = new Intl.NumberFormat();

export function toDate(value) {
  if (value === null || value === undefined || value === '') return null;
  const d = value instanceof Date ? value : new Date(value);
  return Number.isNaN(d.getTime()) ? null : d;
}

/** 2026-11-28 01:02:03 in the browser's time zone. */
export function fmtTime(value) {
  const d = toDate(value);
  if (!d) return '—';
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** 01:02 (or 01:02:03 with seconds, or 11-28 01:02 with the date). */
export function fmtClock(value, { seconds = false, date = false } = {}) {
  const d = toDate(value);
  if (!d) return '';
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  const time = seconds ? `${hm}:${pad(d.getSeconds())}` : hm;
  return date ? `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}` : time;
}

/** "3 s ago", "in 4 min", "now". */
export function fmtRelative(value, now = Date.now()) {
  const d = toDate(value);
  if (!d) return '—';
  const seconds = (d.getTime() - now) / 1000;
  const abs = Math.abs(seconds);
  if (abs < 1) return 'now';
  const span = fmtSpan(abs);
  return seconds < 0 ? `${span} ago` : `in ${span}`;
}

function fmtSpan(abs) {
  if (abs < 60) return `${Math.round(abs)} s`;
  if (abs < 3600) return `${Math.round(abs / 60)} min`;
  if (abs < 86400) return `${(abs / 3600).toFixed(abs < 36000 ? 1 : 0)} h`;
  return `${Math.round(abs / 86400)} d`;
}

/** A duration in milliseconds: "830 ms", "4.2 s", "3 min 4 s", "2 h 5 min". */
export function fmtDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '—';
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

export function fmtNumber(n) {
  return n === null || n === undefined ? '—' : numberFormat.format(n);
}

/** A size in bytes: "512 B", "12.3 KiB", "4.0 MiB". */
export function fmtBytes(n) {
  if (n === null || n === undefined) return '—';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1024 * 1024)).toFixed(1)} MiB`;
}

export function fmtPercent(ratio) {
  if (ratio === null || ratio === undefined) return '—';
  const pct = ratio * 100;
  return `${pct < 10 && pct > 0 ? pct.toFixed(1) : Math.round(pct)}%`;
}

export function fmtJson(value) {
  return value === undefined ? 'null' : JSON.stringify(value, null, 2);
}

/** The first line of a traceback or error message, for table cells. */
export function firstLine(text) {
  if (!text) return '';
  const lines = String(text).trim().split('\n');
  // A Python traceback ends with the exception line: that is the informative one.
  return lines[0].startsWith('Traceback') ? lines[lines.length - 1] : lines[0];
}
