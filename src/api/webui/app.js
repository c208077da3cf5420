// The ringtorrent web UI: the entry point. It keeps the torrents as `sync/maindata` last
// described them (a full update, then deltas by `rid`), polls at the server's
// `refresh_interval` (slower when an answer takes long, not at all while the page is hidden)
// and redraws only what changed.

import * as api from './api.js';
import { bytes, rate, el } from './format.js';
import { TorrentList, STATE_FILTERS, passesState, tagsOf, isStopped } from './list.js';
import { Detail } from './detail.js';
import { RateGraph } from './graph.js';
import * as dialogs from './dialogs.js';

const store = { torrents: new Map(), categories: {}, tags: new Set(), server: {}, rid: 0 };
const $ = (id) => document.getElementById(id);

let list, detail, graph;
let timer = null, polling = false, failures = 0, interval = 1500;

/** Asks which ways in the server has; on failure assumes a password login. */
async function authStatus() {
  try {
    return await api.authStatus();
  } catch (e) {
    return { required: true, password: true, api_key: false, signed_in: null };
  }
}

async function showLogin(message) {
  stopPolling();
  $('app').hidden = true;
  $('login-error').textContent = message || '';
  // Only the ways in the server has: a password form, a key form, or both.
  const st = await authStatus();
  const password = st.password || !st.api_key;
  $('login-form').hidden = !password;
  $('key-form').hidden = !st.api_key;
  $('login-or').hidden = !(password && st.api_key);
  $('login').hidden = false;
  document.body.dataset.view = 'login';
  (password ? $('login-form').username : $('key-form').api_key).focus();
}

function showApp() {
  if (!$('app').hidden) return;
  $('login').hidden = true;
  $('app').hidden = false;
  document.body.dataset.view = 'app';
  // Logging out means nothing where the API is open.
  authStatus().then((st) => { $('btn-logout').hidden = st.signed_in === 'open'; });
}

function stopPolling() {
  clearTimeout(timer);
  timer = null;
}

/** Polls now (and then on its own schedule). */
function pollSoon() {
  stopPolling();
  timer = setTimeout(poll, 0);
}

async function poll() {
  timer = null;
  if (polling) return;
  if (document.hidden) return; // visibilitychange starts it again
  polling = true;
  const started = performance.now();
  let wait;
  try {
    const d = await api.get('sync/maindata', { rid: store.rid });
    showApp();
    apply(d);
    failures = 0;
    setConnection(true);
    const spent = performance.now() - started;
    // Never ask more often than the server says, nor spend more than a fifth of the time
    // waiting for it (10,000 torrents make a big answer).
    wait = Math.max(interval, spent * 4);
  } catch (e) {
    polling = false;
    if (e instanceof api.Forbidden) { showLogin(); return; }
    failures++;
    setConnection(false, e);
    wait = Math.min(30000, 1000 * 2 ** Math.min(failures, 5));
  }
  polling = false;
  if (!timer && $('app').hidden === false) timer = setTimeout(poll, wait);
}

/** Merges a `maindata` answer into the store and redraws. */
function apply(d) {
  let structure = false;
  const changed = new Set();
  if (d.full_update) {
    store.torrents.clear();
    store.categories = {};
    store.tags = new Set();
    store.server = {};
    structure = true;
  }
  for (const [hash, fields] of Object.entries(d.torrents || {})) {
    const t = store.torrents.get(hash);
    if (t) {
      Object.assign(t, fields);
      for (const k in fields) changed.add(k);
    } else {
      fields.hash = hash;
      store.torrents.set(hash, fields);
      structure = true;
    }
  }
  for (const hash of d.torrents_removed || []) {
    store.torrents.delete(hash);
    structure = true;
  }
  let sidebar = structure || ['state', 'category', 'tags', 'dlspeed', 'upspeed', 'progress'].some((k) => changed.has(k));
  for (const [name, c] of Object.entries(d.categories || {})) { store.categories[name] = c; sidebar = true; }
  for (const name of d.categories_removed || []) { delete store.categories[name]; sidebar = true; }
  for (const t of d.tags || []) { store.tags.add(t); sidebar = true; }
  for (const t of d.tags_removed || []) { store.tags.delete(t); sidebar = true; }
  Object.assign(store.server, d.server_state || {});
  if (store.server.refresh_interval > 0) interval = Math.max(500, store.server.refresh_interval);
  store.rid = d.rid;
  // A filter on a category or tag that went away shows everything again.
  if (list.filter.category && !(list.filter.category in store.categories)) { list.filter.category = null; structure = true; }
  if (list.filter.tag && !store.tags.has(list.filter.tag)) { list.filter.tag = null; structure = true; }
  if (structure) list.prune();
  list.update(structure, changed);
  if (sidebar) renderSidebar();
  if (d.categories || d.categories_removed || d.full_update) dialogs.fillCategoryChoices(store.categories);
  renderStatus();
  graph.push(store.server.dl_info_speed, store.server.up_info_speed);
  updateToolbar();
  detail.refresh();
  document.body.dataset.rid = String(store.rid);
  document.body.dataset.torrents = String(store.torrents.size);
}

function setConnection(ok, error) {
  const c = $('st-conn');
  c.textContent = ok ? '' : `Disconnected: ${error?.message || error} (retrying)`;
  c.className = ok ? '' : 'error';
}

function filterItem(ul, label, count, active, onClick, onRemove) {
  const li = el('li', active ? 'active' : '');
  const b = el('button', 'filter', label);
  b.type = 'button';
  b.append(el('span', 'count', String(count)));
  b.addEventListener('click', onClick);
  li.append(b);
  if (onRemove) {
    const x = el('button', 'small remove', '×');
    x.type = 'button';
    x.title = `Remove ${label}`;
    x.addEventListener('click', onRemove);
    li.append(x);
  }
  ul.append(li);
}

function renderSidebar() {
  const f = list.filter;
  const all = [...store.torrents.values()];
  const set = (patch) => { Object.assign(f, patch); list.update(true); renderSidebar(); };
  const states = $('filter-state');
  states.replaceChildren();
  for (const [key, label] of STATE_FILTERS) {
    const n = key === 'all' ? all.length : all.reduce((a, t) => a + passesState(key, t), 0);
    filterItem(states, label, n, f.state === key, () => set({ state: key }));
  }
  const cats = $('filter-category');
  cats.replaceChildren();
  const byCat = new Map();
  for (const t of all) byCat.set(t.category || '', (byCat.get(t.category || '') || 0) + 1);
  filterItem(cats, 'All', all.length, f.category === null, () => set({ category: null }));
  filterItem(cats, 'Uncategorised', byCat.get('') || 0, f.category === '', () => set({ category: '' }));
  for (const name of Object.keys(store.categories).sort()) {
    filterItem(cats, name, byCat.get(name) || 0, f.category === name, () => set({ category: name }), async () => {
      if (await dialogs.confirm(`Remove the category “${name}”? Its torrents stay, without a category.`)) {
        act(() => api.post('torrents/removeCategories', { categories: name }));
      }
    });
  }
  const tags = $('filter-tag');
  tags.replaceChildren();
  const byTag = new Map();
  let untagged = 0;
  for (const t of all) {
    const mine = tagsOf(t);
    if (!mine.length) untagged++;
    for (const x of mine) byTag.set(x, (byTag.get(x) || 0) + 1);
  }
  filterItem(tags, 'All', all.length, f.tag === null, () => set({ tag: null }));
  filterItem(tags, 'Untagged', untagged, f.tag === '', () => set({ tag: '' }));
  for (const name of [...store.tags].sort()) {
    filterItem(tags, name, byTag.get(name) || 0, f.tag === name, () => set({ tag: name }), async () => {
      if (await dialogs.confirm(`Delete the tag “${name}” from every torrent?`)) {
        act(() => api.post('torrents/deleteTags', { tags: name }));
      }
    });
  }
}

function renderStatus() {
  const s = store.server;
  $('st-down').textContent = `↓ ${rate(s.dl_info_speed) || '0 B/s'}`;
  $('st-up').textContent = `↑ ${rate(s.up_info_speed) || '0 B/s'}`;
  const lim = (v) => (v > 0 ? rate(v) : '∞');
  $('st-limits').textContent = `limits ↓ ${lim(s.dl_rate_limit)} ↑ ${lim(s.up_rate_limit)}`;
  $('st-peers').textContent = `${s.total_peer_connections || 0} peers`;
  $('st-dht').textContent = `DHT ${s.dht_nodes || 0} nodes`;
  $('st-free').textContent = s.free_space_on_disk ? `${bytes(s.free_space_on_disk)} free` : '';
  $('st-count').textContent = `${list.order.length} of ${store.torrents.size} torrents, ${list.selected.size} selected`;
}

function updateToolbar() {
  const none = list.selected.size === 0;
  for (const b of document.querySelectorAll('.needs-selection')) b.disabled = none;
}

/** Runs an action, then polls at once so that its effect shows. */
async function act(work) {
  try {
    await work();
  } catch (e) {
    if (e instanceof api.Forbidden) { showLogin(); return; }
    setConnection(false, e);
  }
  pollSoon();
}

function selection() {
  return api.hashes(list.selected);
}

function setup() {
  list = new TorrentList(store.torrents, (hash) => {
    detail.show(hash);
    updateToolbar();
    renderStatus();
  }, (e) => {
    if (e.key === 'Delete' && list.selected.size) $('btn-delete').click();
  });
  detail = new Detail(store, (e) => {
    if (e instanceof api.Forbidden) showLogin(); else setConnection(false, e);
  }, pollSoon);
  graph = new RateGraph($('graph'));
  dialogs.setupDialogs(pollSoon);

  $('btn-add').addEventListener('click', () => dialogs.openAdd());
  $('btn-start').addEventListener('click', () => act(() => api.post('torrents/resume', { hashes: selection() })));
  $('btn-stop').addEventListener('click', () => act(() => api.post('torrents/pause', { hashes: selection() })));
  $('btn-recheck').addEventListener('click', () => act(() => api.post('torrents/recheck', { hashes: selection() })));
  $('btn-delete').addEventListener('click', async () => {
    const names = [...list.selected].map((h) => store.torrents.get(h)?.name || h);
    const answer = await dialogs.confirmDelete(names);
    if (answer) {
      const hashes = selection();
      await detail.release([...list.selected]);
      act(() => api.post('torrents/delete', { hashes, deleteFiles: String(answer.files) }));
    }
  });
  $('set-category').addEventListener('change', (e) => {
    const c = e.target.value;
    if (c === '\u0000') return;
    act(() => api.post('torrents/setCategory', { hashes: selection(), category: c }));
    e.target.value = '\u0000';
  });
  let typing = 0;
  $('search').addEventListener('input', (e) => {
    clearTimeout(typing);
    typing = setTimeout(() => { list.filter.text = e.target.value.trim(); list.update(true); renderStatus(); }, 120);
  });
  $('btn-limits').addEventListener('click', () => dialogs.openLimits(store.server));
  $('btn-new-category').addEventListener('click', () => dialogs.openCategory());
  $('btn-new-tag').addEventListener('click', () => dialogs.openTag());
  $('btn-logout').addEventListener('click', async () => {
    try { await api.logout(); } catch (e) { /* shown by the next poll */ }
    store.rid = 0;
    pollSoon();
  });
  const loggedIn = () => {
    $('login-error').textContent = '';
    store.rid = 0;
    showApp();
    pollSoon();
  };
  $('login-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = e.target;
    const problem = await api.login(f.username.value, f.password.value);
    if (problem) { $('login-error').textContent = problem; return; }
    f.password.value = '';
    loggedIn();
  });
  $('key-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = e.target;
    const problem = await api.loginWithKey(f.api_key.value.trim());
    if (problem) { $('login-error').textContent = problem; return; }
    f.api_key.value = '';
    loggedIn();
  });
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && !timer && !polling && $('login').hidden) pollSoon();
  });
  updateToolbar();
  pollSoon();
}

setup();
