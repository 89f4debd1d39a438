// Shared pieces of UI: badges, times, tables, JSON and traceback blocks, notices, toasts,
// dialogs and buttons that run an API action.

import { ApiError } from './api.js';
import { h, replace } from './dom.js';
import { fmtJson, fmtRelative, fmtTime, toDate } from './format.js';

// ---- small pieces ------------------------------------------------------------------------

/** A coloured state badge; the colour comes from the state name (see style.css). */
export function badge(state, label = state) {
  return h('span', { class: `badge badge-${String(state).replace(/[^a-z_-]/gi, '')}` }, label);
}

/** "3 s ago" with the full local and UTC time on hover; kept current by the relative clock. */
export function relTime(value) {
  const d = toDate(value);
  if (!d) return h('span', { class: 'muted' }, '—');
  return h('time', {
    datetime: d.toISOString(),
    title: `${fmtTime(d)} (${d.toISOString()})`,
    'data-relative': true,
  }, fmtRelative(d));
}

/** "2026-11-28 01:02:03 · 3 s ago" for detail views. */
export function absTime(value) {
  const d = toDate(value);
  if (!d) return h('span', { class: 'muted' }, '—');
  return h('span', { class: 'abs-time' },
    h('span', { title: d.toISOString() }, fmtTime(d)), ' ', h('span', { class: 'muted' }, '· ', relTime(d)));
}

/** A monospace id, as a link when `href` is given. */
export function idCell(id, href) {
  if (!id) return h('span', { class: 'muted' }, '—');
  return href ? h('a', { class: 'mono', href }, id) : h('span', { class: 'mono' }, id);
}

export function jsonBlock(value) {
  return h('pre', { class: 'code' }, fmtJson(value));
}

export function tracebackBlock(text) {
  return h('pre', { class: 'traceback' }, text);
}

/** A definition list of label -> value (strings or nodes). */
export function kvGrid(pairs) {
  return h('dl', { class: 'kv' },
    pairs.filter(Boolean).map(([label, value]) => [
      h('dt', null, label),
      h('dd', null, value === null || value === undefined || value === '' ? h('span', { class: 'muted' }, '—') : value),
    ]));
}

export function panel(title, body, { actions = null, cls = '' } = {}) {
  return h('section', { class: ['panel', cls] },
    title || actions ? h('header', { class: 'panel-head' }, h('h2', null, title), actions && h('div', { class: 'panel-actions' }, actions)) : null,
    h('div', { class: 'panel-body' }, body));
}

export function pageHeader(title, { subtitle = null, actions = null } = {}) {
  return h('header', { class: 'page-head' },
    h('div', null, h('h1', null, title), subtitle && h('p', { class: 'subtitle' }, subtitle)),
    actions && h('div', { class: 'page-actions' }, actions));
}

/** A table with a header row; `rows` are <tr> elements, `empty` shown when there are none. */
export function table(columns, rows, { empty = 'Nothing here.', cls = '' } = {}) {
  return h('div', { class: 'table-wrap' },
    h('table', { class: ['table', cls] },
      h('thead', null, h('tr', null, columns.map((c) => h('th', { class: c.cls }, c.label)))),
      h('tbody', null, rows.length ? rows : h('tr', { class: 'empty' }, h('td', { colspan: columns.length }, empty)))));
}

export function notice(kind, title, text = null) {
  return h('div', { class: `notice notice-${kind}`, role: kind === 'error' ? 'alert' : 'note' },
    h('strong', null, title), text && h('span', null, ' ', text));
}

/** The friendly explanation of an API error, for a page that could not load. */
export function errorNotice(err) {
  if (err instanceof ApiError) {
    if (err.code === 'operator_only' && err.details && err.details.field) {
      return notice('info', 'This needs an operator token.', err.message);
    }
    if (err.code === 'operator_only') {
      return notice('info', 'This needs an operator token.',
        'Your token is bound to a tenant; queues, cron and workers are cluster-wide, so only an operator token (one without a tenant) can see them.');
    }
    if (err.status === 403) {
      const scope = err.details && err.details.required;
      return notice('info', 'Your token cannot see this.',
        scope ? `It lacks the “${scope}” scope.` : err.message);
    }
    if (err.status === 404) return notice('warn', 'Not found.', err.message);
    if (err.code === 'network') return notice('error', 'Connection lost.', 'Retrying…');
    return notice('error', `Error ${err.status || ''} ${err.code}`.trim() + '.', err.message);
  }
  return notice('error', 'Something went wrong.', String(err && err.message ? err.message : err));
}

export function loading() {
  return h('div', { class: 'loading', 'aria-busy': 'true' }, 'Loading…');
}

// ---- toasts ------------------------------------------------------------------------------

/** A short message in the corner; `link` = {href, label} adds a link to what was created. */
export function toast(message, { kind = 'ok', link = null, timeout = 6000 } = {}) {
  const box = document.getElementById('toasts');
  const el = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    h('span', null, message),
    link && h('a', { href: link.href, class: 'toast-link' }, link.label),
    h('button', { type: 'button', class: 'toast-close', 'aria-label': 'Dismiss', onclick: () => el.remove() }, '×'));
  box.append(el);
  setTimeout(() => el.remove(), timeout);
  return el;
}

export function errorToast(err) {
  const message = err instanceof ApiError ? `${err.message}` : String(err);
  return toast(message, { kind: 'error', timeout: 10000 });
}

// ---- dialogs -----------------------------------------------------------------------------

/**
 * Show the modal dialog with `body` and a confirm button; resolves to the value of
 * `collect()` when confirmed, or null when cancelled.
 */
export function openDialog({ title, body, confirmLabel = 'Confirm', danger = false, collect = () => true }) {
  const dialog = document.getElementById('dialog');
  return new Promise((resolve) => {
    let result = null;
    const form = h('form', { method: 'dialog', class: 'dialog-form' },
      h('h2', null, title),
      h('div', { class: 'dialog-body' }, body),
      h('div', { class: 'dialog-actions' },
        h('button', { type: 'button', class: 'btn', onclick: () => dialog.close() }, 'Cancel'),
        h('button', { type: 'submit', class: ['btn', danger ? 'btn-danger' : 'btn-primary'], value: 'confirm' }, confirmLabel)));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      result = collect();
      if (result !== null && result !== undefined) dialog.close();
    });
    dialog.addEventListener('close', () => resolve(result), { once: true });
    replace(dialog, form);
    dialog.showModal();
    const confirm = form.querySelector('button[type=submit]');
    if (confirm) confirm.focus();
  });
}

export async function confirmDialog(title, text, { confirmLabel = 'Confirm', danger = false } = {}) {
  const result = await openDialog({ title, body: h('p', null, text), confirmLabel, danger });
  return result === true;
}

// ---- buttons -----------------------------------------------------------------------------

/**
 * A button that runs `action` (async), disabled while it runs; an ApiError becomes an error
 * toast. `confirm` = {title, text, confirmLabel, danger} asks first.
 */
export function actionButton(label, action, { kind = '', confirm = null, title = null, small = true } = {}) {
  const button = h('button', {
    type: 'button',
    class: ['btn', kind && `btn-${kind}`, small && 'btn-sm'],
    title,
  }, label);
  button.addEventListener('click', async () => {
    if (confirm && !(await confirmDialog(confirm.title, confirm.text, confirm))) return;
    button.disabled = true;
    try {
      await action();
    } catch (err) {
      errorToast(err);
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

/** A "Load more" button for cursor pages (hidden when there is no next page). */
export function loadMoreButton(hasMore, onClick) {
  if (!hasMore) return null;
  return h('div', { class: 'load-more' }, actionButton('Load more', onClick, { small: false }));
}

// ---- rendering only on change -----------------------------------------------------------

/**
 * Re-render `el` with `render(data)` only when `data` differs from last time, so polling
 * every 2 s neither flickers nor drops a text selection while nothing changed.
 */
const renderedKeys = new WeakMap();

export function renderIfChanged(el, data, render) {
  const key = JSON.stringify(data);
  if (renderedKeys.get(el) === key) return false;
  replace(el, render(data));
  renderedKeys.set(el, key);
  return true;
}

/** Forget what `el` shows, so the next renderIfChanged re-renders it. */
export function invalidate(el) {
  renderedKeys.delete(el);
}

// ---- loading ---------------------------------------------------------------------------

/**
 * A page body with a slot for a friendly error notice. `load(fn)` runs an async load that
 * renders into `content`; the content stays hidden until a load succeeds. Lost connections and
 * 401s are re-thrown: the app shows a banner (keeping the last data) or the login form.
 */
export class Loader {
  constructor(...children) {
    this.error = h('div', { class: 'page-error' });
    this.content = h('div', { class: 'page-content', hidden: true }, children);
    this.el = h('div', null, this.error, this.content);
  }

  async load(fn) {
    try {
      const result = await fn();
      this.content.hidden = false;
      this.error.replaceChildren();
      invalidate(this.error);
      return result;
    } catch (err) {
      if (err instanceof ApiError && (err.code === 'network' || err.status === 401)) throw err;
      renderIfChanged(this.error, { error: err.code || String(err), message: err.message }, () => errorNotice(err));
      return undefined;
    }
  }
}
