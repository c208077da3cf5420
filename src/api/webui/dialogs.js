// The dialogs: add torrents, delete, global limits, new category, new tags, confirm.

import * as api from './api.js';
import { el } from './format.js';

/** Opens a dialog; resolves to the value of the button that closed it. */
function open(dialog) {
  const error = dialog.querySelector('.error');
  if (error) error.textContent = '';
  dialog.returnValue = '';
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener('close', () => resolve(dialog.returnValue), { once: true }));
}

/** Keeps a dialog open on submit while `work` runs; shows its error in the dialog. */
function submitting(dialog, button, work) {
  const form = dialog.querySelector('form');
  form.addEventListener('submit', async (e) => {
    if (e.submitter?.value !== button) return;
    e.preventDefault();
    const error = dialog.querySelector('.error');
    try {
      const problem = await work(form);
      if (problem) { error.textContent = problem; return; }
      dialog.close(button);
    } catch (err) {
      error.textContent = err.message;
    }
  });
}

export function setupDialogs(refresh) {
  const add = document.getElementById('dlg-add');
  submitting(add, 'add', async (form) => {
    const data = new FormData();
    const urls = form.urls.value.trim();
    const files = [...form.torrents.files];
    if (!urls && !files.length) return 'Give a magnet link or choose a .torrent file.';
    if (urls) data.append('urls', urls);
    for (const f of files) data.append('torrents', f, f.name);
    for (const k of ['category', 'savepath', 'tags']) {
      if (form[k].value.trim()) data.append(k, form[k].value.trim());
    }
    if (form.stopped.checked) { data.append('stopped', 'true'); data.append('paused', 'true'); }
    const answer = await api.post('torrents/add', data);
    if (String(answer).trim() !== 'Ok.') return 'Nothing was added: the torrent is invalid or already there.';
    form.reset();
    refresh();
    return null;
  });

  const limits = document.getElementById('dlg-limits');
  submitting(limits, 'save', async (form) => {
    const kib = (v) => String(Math.max(0, Math.round(Number(v) || 0)) * 1024);
    await api.post('transfer/setDownloadLimit', { limit: kib(form.down.value) });
    await api.post('transfer/setUploadLimit', { limit: kib(form.up.value) });
    refresh();
    return null;
  });

  const category = document.getElementById('dlg-category');
  submitting(category, 'save', async (form) => {
    const name = form.name.value.trim();
    if (!name) return 'Give the category a name.';
    await api.post('torrents/createCategory', { category: name, savePath: form.path.value.trim() });
    form.reset();
    refresh();
    return null;
  });

  const tag = document.getElementById('dlg-tag');
  submitting(tag, 'save', async (form) => {
    const tags = form.tags.value.split(',').map((x) => x.trim()).filter(Boolean);
    if (!tags.length) return 'Give at least one tag.';
    await api.post('torrents/createTags', { tags: tags.join(',') });
    form.reset();
    refresh();
    return null;
  });
}

export const openAdd = () => open(document.getElementById('dlg-add'));
export const openCategory = () => open(document.getElementById('dlg-category'));
export const openTag = () => open(document.getElementById('dlg-tag'));

export async function openLimits(server) {
  const d = document.getElementById('dlg-limits');
  const form = d.querySelector('form');
  form.down.value = Math.round((server.dl_rate_limit || 0) / 1024);
  form.up.value = Math.round((server.up_rate_limit || 0) / 1024);
  return open(d);
}

/** Asks before deleting; resolves to {files} or null. */
export async function confirmDelete(names) {
  const d = document.getElementById('dlg-delete');
  const form = d.querySelector('form');
  form.files.checked = false;
  d.querySelector('.what').textContent = names.length === 1
    ? `Delete “${names[0]}”?` : `Delete these ${names.length} torrents?`;
  const v = await open(d);
  return v === 'delete' ? { files: form.files.checked } : null;
}

export async function confirm(text) {
  const d = document.getElementById('dlg-confirm');
  d.querySelector('.what').textContent = text;
  return (await open(d)) === 'ok';
}

/** Fills every category <select> of the dialogs and the toolbar. */
export function fillCategoryChoices(categories) {
  const names = Object.keys(categories).sort();
  for (const s of document.querySelectorAll('#dlg-add .category-choices')) {
    const keep = s.value;
    s.replaceChildren(...['', ...names].map((c) => { const o = el('option', '', c || '(none)'); o.value = c; return o; }));
    s.value = names.includes(keep) ? keep : '';
  }
  const set = document.getElementById('set-category');
  const head = el('option', '', 'Set category…');
  head.value = '\u0000';
  set.replaceChildren(head, ...['', ...names].map((c) => { const o = el('option', '', c || '(none)'); o.value = c; return o; }));
  set.value = '\u0000';
}
