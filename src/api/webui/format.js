// How numbers and states are shown.

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function bytes(n) {
  if (!(n > 0)) return n === 0 ? '0 B' : '';
  let i = 0;
  while (n >= 1024 && i < UNITS.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0) : n} ${UNITS[i]}`;
}

export const rate = (n) => (n > 0 ? `${bytes(n)}/s` : '');

export function eta(secs) {
  if (!(secs >= 0) || secs >= 8640000) return '∞';
  if (secs < 60) return `${secs}s`;
  const m = Math.floor(secs / 60), h = Math.floor(m / 60), d = Math.floor(h / 24);
  if (d) return `${d}d ${h % 24}h`;
  if (h) return `${h}h ${m % 60}m`;
  return `${m}m ${secs % 60}s`;
}

export const percent = (p) => `${(Math.floor((p || 0) * 1000) / 10).toFixed(1)}%`;

export const ratio = (r) => (r >= 0 ? (r >= 1e3 ? '∞' : r.toFixed(2)) : '');

export function date(unix) {
  if (!(unix > 0)) return '';
  const d = new Date(unix * 1000);
  const pad = (x) => String(x).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

const STATES = {
  downloading: 'Downloading', forcedDL: '[F] Downloading', metaDL: 'Metadata',
  forcedMetaDL: '[F] Metadata', stalledDL: 'Stalled', uploading: 'Seeding',
  forcedUP: '[F] Seeding', stalledUP: 'Seeding', pausedDL: 'Stopped', pausedUP: 'Stopped',
  stoppedDL: 'Stopped', stoppedUP: 'Stopped', queuedDL: 'Queued', queuedUP: 'Queued',
  checkingDL: 'Checking', checkingUP: 'Checking', checkingResumeData: 'Checking',
  moving: 'Moving', error: 'Error', missingFiles: 'Missing files', unknown: 'Unknown',
};

export const stateLabel = (s) => STATES[s] || s || '';

/** A CSS class for a state: its colour. */
export function stateClass(s) {
  if (!s) return '';
  if (s.startsWith('paused') || s.startsWith('stopped')) return 'st-stopped';
  if (s === 'error' || s === 'missingFiles') return 'st-error';
  if (s.startsWith('checking') || s === 'moving') return 'st-checking';
  if (s.endsWith('UP') || s === 'uploading') return 'st-seeding';
  return 'st-downloading';
}

/** An element with a class and text. */
export function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
