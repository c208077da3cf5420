// The torrent list: sorted, filtered, and windowed: only the rows in view exist in the DOM
// (a pool of about a screenful, moved and refilled on scroll), so 10,000 torrents cost
// what 40 do.

import { bytes, rate, eta, percent, ratio, date, stateLabel, stateClass, el } from './format.js';

export const ROW_HEIGHT = 24;

export const COLUMNS = [
  { key: 'name', title: 'Name', width: 'minmax(14em, 4fr)', text: (t) => t.name },
  { key: 'size', title: 'Size', width: '6.5em', num: true, text: (t) => bytes(t.size) },
  { key: 'progress', title: 'Progress', width: '8em', num: true, bar: true },
  { key: 'state', title: 'State', width: '8.5em', text: (t) => stateLabel(t.state) },
  { key: 'dlspeed', title: 'Down', width: '7em', num: true, text: (t) => rate(t.dlspeed) },
  { key: 'upspeed', title: 'Up', width: '7em', num: true, text: (t) => rate(t.upspeed) },
  { key: 'eta', title: 'ETA', width: '5.5em', num: true, text: (t) => (t.progress >= 1 ? '' : eta(t.eta)) },
  { key: 'ratio', title: 'Ratio', width: '4.5em', num: true, text: (t) => ratio(t.ratio) },
  { key: 'category', title: 'Category', width: 'minmax(6.5em, 1fr)', text: (t) => t.category },
  { key: 'tags', title: 'Tags', width: 'minmax(5em, 1fr)', text: (t) => t.tags },
  { key: 'added_on', title: 'Added', width: '9.5em', num: true, text: (t) => date(t.added_on) },
];

export const STATE_FILTERS = [
  ['all', 'All'], ['downloading', 'Downloading'], ['seeding', 'Seeding'],
  ['completed', 'Completed'], ['stopped', 'Stopped'], ['active', 'Active'],
  ['inactive', 'Inactive'], ['stalled', 'Stalled'], ['checking', 'Checking'],
  ['errored', 'Errored'],
];

const DOWNLOADING = new Set(['downloading', 'metaDL', 'forcedMetaDL', 'stalledDL', 'forcedDL', 'queuedDL', 'checkingDL']);
const SEEDING = new Set(['uploading', 'stalledUP', 'forcedUP', 'queuedUP', 'checkingUP']);

export const isStopped = (t) => /^(paused|stopped)/.test(t.state || '');

/** Whether a torrent passes a status filter (qBittorrent's filters). */
export function passesState(f, t) {
  const s = t.state || '';
  const active = t.dlspeed > 0 || t.upspeed > 0;
  switch (f) {
    case 'downloading': return DOWNLOADING.has(s);
    case 'seeding': return SEEDING.has(s);
    case 'completed': return t.progress >= 1;
    case 'stopped': return isStopped(t);
    case 'active': return active;
    case 'inactive': return !active;
    case 'stalled': return s === 'stalledUP' || s === 'stalledDL';
    case 'checking': return s.startsWith('checking');
    case 'errored': return s === 'error' || s === 'missingFiles';
    default: return true;
  }
}

/** The tags of a torrent (the WebAPI gives them as "a, b"). */
export const tagsOf = (t) => (t.tags ? t.tags.split(',').map((x) => x.trim()).filter(Boolean) : []);

// Fields whose change can move a row or take it in or out of the filtered list.
const ORDER_FIELDS = new Set(['name', 'state', 'category', 'tags', 'dlspeed', 'upspeed', 'progress']);

const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });

export class TorrentList {
  constructor(torrents, onFocus, onKey) {
    this.torrents = torrents;
    this.onFocus = onFocus;
    this.onKey = onKey;
    this.order = [];
    this.sortKey = 'added_on';
    this.sortDesc = true;
    this.filter = { state: 'all', category: null, tag: null, text: '' };
    this.selected = new Set();
    this.focus = null;
    this.anchor = null;
    this.pool = [];
    this.list = document.getElementById('list');
    this.body = document.getElementById('list-body');
    this.head = document.getElementById('list-head');
    this.spacer = document.getElementById('list-spacer');
    this.list.style.setProperty('--cols', COLUMNS.map((c) => c.width).join(' '));
    this.body.prepend(this.head);
    for (const c of COLUMNS) {
      const h = el('div', `cell${c.num ? ' num' : ''}`, c.title);
      h.dataset.key = c.key;
      h.setAttribute('role', 'columnheader');
      h.title = `Sort by ${c.title.toLowerCase()}`;
      this.head.append(h);
    }
    this.head.addEventListener('click', (e) => {
      const key = e.target.closest('[data-key]')?.dataset.key;
      if (!key) return;
      if (this.sortKey === key) this.sortDesc = !this.sortDesc;
      else { this.sortKey = key; this.sortDesc = !!COLUMNS.find((c) => c.key === key).num; }
      this.update(true);
    });
    let frame = 0;
    this.body.addEventListener('scroll', () => {
      if (!frame) frame = requestAnimationFrame(() => { frame = 0; this.render(); });
    });
    new ResizeObserver(() => this.render()).observe(this.body);
    this.body.addEventListener('click', (e) => this.click(e));
    this.body.addEventListener('keydown', (e) => this.key(e));
  }

  /** Recomputes the order when `structure` (torrents came or went, a sort or filter
   * changed) or a field in `changed` can move rows, then redraws the rows in view. */
  update(structure, changed) {
    if (structure || (changed && [...changed].some((k) => k === this.sortKey || ORDER_FIELDS.has(k)))) {
      this.reorder();
    }
    this.render();
  }

  reorder() {
    const f = this.filter;
    const text = f.text.toLowerCase();
    const out = [];
    for (const t of this.torrents.values()) {
      if (f.state !== 'all' && !passesState(f.state, t)) continue;
      if (f.category !== null && (t.category || '') !== f.category) continue;
      if (f.tag !== null && (f.tag === '' ? t.tags : !tagsOf(t).includes(f.tag))) continue;
      if (text && !(t.name || '').toLowerCase().includes(text)) continue;
      out.push(t);
    }
    const key = this.sortKey, dir = this.sortDesc ? -1 : 1;
    out.sort((a, b) => {
      const x = a[key], y = b[key];
      let c = typeof x === 'string' || typeof y === 'string'
        ? collator.compare(x || '', y || '') : (x || 0) - (y || 0);
      if (!c) c = collator.compare(a.name || '', b.name || '') || (a.hash < b.hash ? -1 : 1);
      return c * dir;
    });
    this.order = out.map((t) => t.hash);
    this.index = null;
    this.spacer.style.height = `${(this.order.length + 1) * ROW_HEIGHT}px`;
    for (const h of this.head.children) {
      h.classList.toggle('sorted', h.dataset.key === key);
      h.classList.toggle('desc', h.dataset.key === key && this.sortDesc);
    }
  }

  indexOf(hash) {
    if (!this.index) this.index = new Map(this.order.map((h, i) => [h, i]));
    return this.index.get(hash);
  }

  row() {
    const r = el('div', 'row');
    r.setAttribute('role', 'row');
    r.cells = COLUMNS.map((c) => {
      const cell = el('div', `cell${c.num ? ' num' : ''} c-${c.key}`);
      if (c.bar) {
        cell.bar = el('div', 'bar');
        cell.label = el('span', 'bar-label');
        cell.append(cell.bar, cell.label);
      }
      r.append(cell);
      return cell;
    });
    this.body.append(r);
    return r;
  }

  /** Fills the pool of rows from the order at the scroll position. */
  render() {
    const first = Math.max(0, Math.floor(this.body.scrollTop / ROW_HEIGHT) - 2);
    const count = Math.ceil(this.body.clientHeight / ROW_HEIGHT) + 5;
    while (this.pool.length < count) this.pool.push(this.row());
    for (let i = 0; i < this.pool.length; i++) {
      const r = this.pool[i];
      const idx = first + i;
      const hash = this.order[idx];
      const t = hash && this.torrents.get(hash);
      if (!t || i >= count) {
        if (!r.hidden) r.hidden = true;
        r.dataset.hash = '';
        continue;
      }
      r.hidden = false;
      if (r.idx !== idx) {
        r.idx = idx;
        r.style.transform = `translateY(${(idx + 1) * ROW_HEIGHT}px)`;
      }
      r.dataset.hash = hash;
      r.dataset.state = t.state || '';
      r.classList.toggle('selected', this.selected.has(hash));
      r.classList.toggle('focus', this.focus === hash);
      r.classList.toggle('odd', idx % 2 === 1);
      for (let c = 0; c < COLUMNS.length; c++) {
        const col = COLUMNS[c], cell = r.cells[c];
        if (col.bar) {
          const p = Math.max(0, Math.min(1, t.progress || 0));
          const w = `${(p * 100).toFixed(1)}%`;
          if (cell.bar.style.width !== w) cell.bar.style.width = w;
          const text = percent(p);
          if (cell.label.textContent !== text) cell.label.textContent = text;
          continue;
        }
        const text = String(col.text(t) ?? '');
        if (cell.textContent !== text) {
          cell.textContent = text;
          if (col.key === 'name' || col.key === 'tags' || col.key === 'category') cell.title = text;
        }
        if (col.key === 'state') cell.className = `cell c-state ${stateClass(t.state)}`;
      }
    }
  }

  click(e) {
    const r = e.target.closest('.row[data-hash]');
    if (!r || !r.dataset.hash) return;
    const hash = r.dataset.hash;
    if (e.shiftKey && this.anchor !== null) {
      const a = this.indexOf(this.anchor), b = this.indexOf(hash);
      if (a !== undefined && b !== undefined) {
        this.selected = new Set(this.order.slice(Math.min(a, b), Math.max(a, b) + 1));
      }
    } else if (e.ctrlKey || e.metaKey) {
      if (this.selected.has(hash)) this.selected.delete(hash); else this.selected.add(hash);
      this.anchor = hash;
    } else {
      this.selected = new Set([hash]);
      this.anchor = hash;
    }
    this.setFocus(hash);
  }

  setFocus(hash) {
    this.focus = hash;
    this.render();
    this.onFocus(hash);
  }

  key(e) {
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      const i = this.focus ? this.indexOf(this.focus) ?? -1 : -1;
      const j = Math.max(0, Math.min(this.order.length - 1, i + (e.key === 'ArrowDown' ? 1 : -1)));
      const hash = this.order[j];
      if (!hash) return;
      this.selected = new Set([hash]);
      this.anchor = hash;
      const top = (j + 1) * ROW_HEIGHT;
      if (top < this.body.scrollTop + ROW_HEIGHT) this.body.scrollTop = top - ROW_HEIGHT;
      else if (top + ROW_HEIGHT > this.body.scrollTop + this.body.clientHeight) {
        this.body.scrollTop = top + ROW_HEIGHT - this.body.clientHeight;
      }
      this.setFocus(hash);
    } else if (e.key === 'a' && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      this.selected = new Set(this.order);
      this.render();
      this.onFocus(this.focus);
    } else {
      this.onKey(e);
    }
  }

  /** Forgets torrents that are gone. */
  prune() {
    for (const h of this.selected) if (!this.torrents.has(h)) this.selected.delete(h);
    if (this.focus && !this.torrents.has(this.focus)) this.setFocus(null);
  }
}
