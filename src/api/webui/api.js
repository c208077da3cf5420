// The qBittorrent WebAPI v2 of this same origin: the only server the UI talks to.

/** A request refused for want of a login (qBittorrent answers 403). */
export class Forbidden extends Error {}

const BASE = '/api/v2/';

async function call(method, params, post, body) {
  let url = BASE + method;
  const init = { credentials: 'same-origin', cache: 'no-store' };
  if (post) {
    init.method = 'POST';
    init.body = body || new URLSearchParams(params || {});
  } else if (params) {
    url += '?' + new URLSearchParams(params);
  }
  const r = await fetch(url, init);
  if (r.status === 403) throw new Forbidden(await r.text());
  if (!r.ok) throw new Error(`${method}: ${r.status} ${(await r.text()).trim()}`);
  const type = r.headers.get('content-type') || '';
  return type.includes('json') ? r.json() : r.text();
}

/** GET a method with query parameters; JSON answers are parsed. */
export const get = (method, params) => call(method, params, false);

/** POST a method with form parameters (an object), or a FormData body. */
export const post = (method, params) =>
  params instanceof FormData ? call(method, null, true, params) : call(method, params, true);

async function loginWith(params, wrong) {
  const r = await fetch(BASE + 'auth/login', {
    method: 'POST',
    credentials: 'same-origin',
    body: new URLSearchParams(params),
  });
  const text = (await r.text()).trim();
  if (r.ok && text === 'Ok.') return null;
  if (r.ok) return wrong;
  return text || `Login failed (${r.status}).`;
}

/** Logs in: resolves to null when it worked, else to the reason. */
export const login = (username, password) =>
  loginWith({ username, password }, 'Wrong user name or password.');

/** Logs in with an API key (a session, as a password gives): null when it worked, else the reason. */
export const loginWithKey = (key) => loginWith({ api_key: key }, 'Unknown API key.');

/** Which ways in the server has (`password`, `api_key`) and how this page is in (`signed_in`). */
export const authStatus = () => get('auth/status');

export const logout = () => call('auth/logout', {}, true);

/** `hashes` as the WebAPI takes them. */
export const hashes = (list) => [...list].join('|');
