// One torrent's detail, in tabs: general (with its limits, category and tags), files (with
// their priorities), peers, trackers and pieces. The open tab is fetched again after each
// list update, and only while a torrent is in focus.

import * as api from './api.js';
import { bytes, rate, eta, percent, ratio, date, stateLabel, el } from './format.js';
import { tagsOf } from './list.js';

const PRIORITIES = [[0, 'Skip'], [1, 'Normal'], [6, 'High'], [7, 'Maximal']];
const TRACKER_STATUS = ['Disabled', 'Not contacted', 'Working', 'Updating', 'Not working'];
const MAX_ROWS = 2000;

function table(headers, rows, numeric = []) {
  const t = el('table', 'grid');
  const head = el('tr');
  headers.forEach((h, i) => head.append(el('th', numeric.includes(i) ? 'num' : '', h)));
  t.append(el('thead'), el('tbody'));
  t.tHead.append(head);
  for (const r of rows.slice(0, MAX_ROWS)) {
    const tr = el('tr');
    r.forEach((v, i) => {
      const td = el('td', numeric.includes(i) ? 'num' : '');
      if (v instanceof Node) td.append(v); else td.textContent = v ?? '';
      tr.append(td);
    });
    t.tBodies[0].append(tr);
  }
  if (rows.length > MAX_ROWS) {
    const tr = el('tr');
    const td = el('td', 'muted', `… and ${rows.length - MAX_ROWS} more`);
    td.colSpan = headers.length;
    tr.append(td);
    t.tBodies[0].append(tr);
  }
  return t;
}

function pairs(list) {
  const dl = el('dl', 'pairs');
  for (const [k, v] of list) dl.append(el('dt', '', k), el('dd', '', v));
  return dl;
}

export class Detail {
  constructor(store, onError, onChange) {
    this.store = store;
    this.onError = onError;
    this.onChange = onChange;
    this.hash = null;
    this.tab = 'general';
    this.seq = 0;
    this.pending = Promise.resolve();
    this.body = document.getElementById('tab-body');
    this.tabs = document.getElementById('tabs');
    this.tabs.addEventListener('click', (e) => {
      const tab = e.target.closest('[data-tab]')?.dataset.tab;
      if (!tab) return;
      this.tab = tab;
      for (const b of this.tabs.children) b.classList.toggle('active', b.dataset.tab === tab);
      this.show(this.hash, true);
    });
  }

  /** Shows a torrent (null: none), from scratch when it changed or `fresh`. */
  show(hash, fresh) {
    if (hash !== this.hash || fresh) {
      this.hash = hash;
      this.form = null;
      this.body.replaceChildren(hash ? el('p', 'muted', 'Loading…') : el('p', 'muted', 'Select a torrent to see its details.'));
    }
    this.refresh();
  }

  /** Fetches the open tab again (after a list update). Editing is never interrupted. */
  refresh() {
    const hash = this.hash;
    if (!hash) return this.pending;
    if (this.body.contains(document.activeElement) && document.activeElement.matches('input, select, textarea')) return this.pending;
    if (!this.store.torrents.has(hash)) {
      // Removed (by us or elsewhere): asking the server about it would only get a 404.
      this.body.replaceChildren(el('p', 'muted', 'This torrent is gone.'));
      return this.pending;
    }
    const seq = ++this.seq;
    this.pending = (async () => {
      try {
        const view = await this[this.tab](hash);
        if (seq !== this.seq || hash !== this.hash) return;
        if (view) this.body.replaceChildren(...view);
      } catch (e) {
        this.onError(e);
      }
    })();
    return this.pending;
  }

  /** Stops showing `hashes` (about to be deleted): no request about them is sent after
   * this resolves, and none is still waiting for its answer. */
  async release(hashes) {
    if (this.hash && hashes.includes(this.hash)) this.show(null);
    await this.pending;
  }

  async general(hash) {
    const t = this.store.torrents.get(hash);
    if (!t) return [el('p', 'muted', 'This torrent is gone.')];
    const p = await api.get('torrents/properties', { hash });
    const info = pairs([
      ['Name', t.name], ['Info hash', hash], ['State', stateLabel(t.state)],
      ['Progress', `${percent(t.progress)} of ${bytes(t.size)}`],
      ['Pieces', p.pieces_num >= 0 ? `${p.pieces_have} of ${p.pieces_num} × ${bytes(p.piece_size)}` : 'metadata not yet received'],
      ['Save path', p.save_path], ['Down', `${rate(t.dlspeed) || '0 B/s'} (${bytes(p.total_downloaded)} in all)`],
      ['Up', `${rate(t.upspeed) || '0 B/s'} (${bytes(p.total_uploaded)} in all)`],
      ['Ratio', ratio(p.share_ratio)], ['ETA', t.progress >= 1 ? '' : eta(t.eta)],
      ['Connections', String(p.nb_connections)], ['Seeds / peers', `${p.seeds} / ${p.peers}`],
      ['Added', date(p.addition_date)], ['Completed', date(p.completion_date)],
      ['Comment', p.comment], ['Created by', p.created_by], ['Private', p.is_private ? 'yes' : 'no'],
    ]);
    if (!this.form || this.form.hash !== hash) this.form = this.settingsForm(hash);
    this.fillForm(t);
    return [info, this.form];
  }

  settingsForm(hash) {
    const f = el('form', 'settings');
    f.hash = hash;
    const field = (label, input) => { const l = el('label', '', label); l.append(input); f.append(l); return input; };
    const num = () => { const i = el('input'); i.type = 'number'; i.min = '0'; i.step = '1'; return i; };
    f.down = field('Download limit, KiB/s (0: none)', num());
    f.up = field('Upload limit, KiB/s (0: none)', num());
    f.category = field('Category', el('select', 'category-choices'));
    f.tags = field('Tags, comma separated', el('input'));
    const save = el('button', '', 'Save');
    save.type = 'submit';
    f.append(save);
    f.addEventListener('submit', async (e) => {
      e.preventDefault();
      const t = this.store.torrents.get(hash);
      if (!t) return;
      try {
        const kib = (i) => String(Math.max(0, Math.round(Number(i.value) || 0)) * 1024);
        await api.post('torrents/setDownloadLimit', { hashes: hash, limit: kib(f.down) });
        await api.post('torrents/setUploadLimit', { hashes: hash, limit: kib(f.up) });
        if ((t.category || '') !== f.category.value) {
          await api.post('torrents/setCategory', { hashes: hash, category: f.category.value });
        }
        const now = f.tags.value.split(',').map((x) => x.trim()).filter(Boolean);
        const was = tagsOf(t);
        const add = now.filter((x) => !was.includes(x)), remove = was.filter((x) => !now.includes(x));
        if (add.length) await api.post('torrents/addTags', { hashes: hash, tags: add.join(',') });
        if (remove.length) await api.post('torrents/removeTags', { hashes: hash, tags: remove.join(',') });
        document.activeElement?.blur();
        this.form.dirty = false;
        this.onChange();
      } catch (err) {
        this.onError(err);
      }
    });
    f.addEventListener('input', () => { f.dirty = true; });
    return f;
  }

  fillForm(t) {
    const f = this.form;
    if (f.dirty) return;
    f.down.value = Math.round((t.dl_limit > 0 ? t.dl_limit : 0) / 1024);
    f.up.value = Math.round((t.up_limit > 0 ? t.up_limit : 0) / 1024);
    const cats = ['', ...Object.keys(this.store.categories).sort()];
    f.category.replaceChildren(...cats.map((c) => { const o = el('option', '', c || '(none)'); o.value = c; return o; }));
    f.category.value = t.category || '';
    f.tags.value = tagsOf(t).join(', ');
  }

  async files(hash) {
    const files = await api.get('torrents/files', { hash });
    if (!files.length) return [el('p', 'muted', 'No files yet: the metadata has not been received.')];
    const rows = files.map((f) => {
      const s = el('select');
      s.dataset.index = f.index;
      for (const [v, name] of PRIORITIES) {
        const o = el('option', '', name);
        o.value = v;
        s.append(o);
      }
      s.value = String(f.priority);
      s.addEventListener('change', async () => {
        try {
          await api.post('torrents/filePrio', { hash, id: String(f.index), priority: s.value });
        } catch (e) { this.onError(e); }
        s.blur();
        this.refresh();
      });
      return [f.name, bytes(f.size), percent(f.progress), s];
    });
    return [table(['File', 'Size', 'Done', 'Priority'], rows, [1, 2])];
  }

  async peers(hash) {
    const d = await api.get('sync/torrentPeers', { hash, rid: 0 });
    const peers = Object.values(d.peers || {});
    if (!peers.length) return [el('p', 'muted', 'No peers connected.')];
    peers.sort((a, b) => (b.dl_speed + b.up_speed) - (a.dl_speed + a.up_speed));
    const rows = peers.map((p) => [
      p.ip.includes(':') ? `[${p.ip}]:${p.port}` : `${p.ip}:${p.port}`, p.client, p.flags,
      percent(p.progress), rate(p.dl_speed), rate(p.up_speed),
    ]);
    return [table(['Address', 'Client', 'Flags', 'Has', 'Down', 'Up'], rows, [3, 4, 5])];
  }

  async trackers(hash) {
    const list = await api.get('torrents/trackers', { hash });
    const rows = list.map((t) => [
      t.url, t.tier >= 0 ? String(t.tier) : '', TRACKER_STATUS[t.status] || String(t.status),
      t.num_peers >= 0 ? String(t.num_peers) : '', t.num_seeds >= 0 ? String(t.num_seeds) : '',
      t.num_leeches >= 0 ? String(t.num_leeches) : '', t.msg,
    ]);
    return [table(['URL', 'Tier', 'Status', 'Peers', 'Seeds', 'Leeches', 'Message'], rows, [1, 3, 4, 5])];
  }

  async pieces(hash) {
    const states = await api.get('torrents/pieceStates', { hash });
    if (!states.length) return [el('p', 'muted', 'No pieces yet: the metadata has not been received.')];
    const have = states.filter((s) => s === 2).length;
    const canvas = el('canvas', 'pieces');
    const caption = el('p', '', `${have} of ${states.length} pieces (${percent(have / states.length)})`);
    requestAnimationFrame(() => drawPieces(canvas, states));
    return [caption, canvas];
  }
}

/** Each column of pixels is the share of its pieces held: dark when all, light when none. */
function drawPieces(canvas, states) {
  const ratioPx = window.devicePixelRatio || 1;
  const w = Math.max(100, canvas.clientWidth), h = canvas.clientHeight || 24;
  canvas.width = Math.round(w * ratioPx);
  canvas.height = Math.round(h * ratioPx);
  const g = canvas.getContext('2d');
  g.scale(ratioPx, ratioPx);
  g.fillStyle = '#e3e8ee';
  g.fillRect(0, 0, w, h);
  const per = states.length / w;
  for (let x = 0; x < w; x++) {
    const a = Math.floor(x * per), b = Math.max(a + 1, Math.floor((x + 1) * per));
    let n = 0, downloading = 0;
    for (let i = a; i < b && i < states.length; i++) {
      if (states[i] === 2) n++; else if (states[i] === 1) downloading++;
    }
    const share = n / (b - a);
    if (share > 0) {
      g.fillStyle = `rgba(47, 125, 209, ${0.25 + 0.75 * share})`;
      g.fillRect(x, 0, 1, h);
    } else if (downloading) {
      g.fillStyle = '#2f9d57';
      g.fillRect(x, 0, 1, h);
    }
  }
}
