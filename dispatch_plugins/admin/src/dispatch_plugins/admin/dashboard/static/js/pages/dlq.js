// Dead letters: entries with their payload and traceback; replay one or all (in batches, with
// progress), purge the ones older than a cutoff the user picks. The list carries a preview of
// a long payload (payload_truncated); "Show the whole payload" fetches the entry for it.

import { api, seg } from '../api.js';
import { h } from '../dom.js';
import { filterBar, pick } from '../filters.js';
import { firstLine, fmtBytes, fmtNumber, fmtTime } from '../format.js';
import { PagedList } from '../paging.js';
import { jobHref } from '../router.js';
import {
  actionButton, badge, confirmDialog, errorToast, idCell, jsonBlock, kvGrid, Loader,
  loadMoreButton, openDialog, pageHeader, relTime, renderIfChanged, table, toast, tracebackBlock,
} from '../ui.js';

const REPLAY_BATCH = 100;
const PURGE_BATCH = 1000;

export default function dlq(root, ctx) {
  const filters = pick(ctx.query, ['queue', 'name']);
  const list = new PagedList('dlq', filters);
  const expanded = new Set();
  // Whole payloads fetched with "Show the whole payload", by entry id: kept across polls.
  const wholes = new Map();
  const count = h('span', { class: 'count' });
  const task = h('div', { class: 'task-slot' });
  const rows = h('div');
  const more = h('div');
  const loader = new Loader(h('section', { class: 'panel' }, rows, more));

  const busy = { running: false };
  const replayAllButton = actionButton('Replay all', () => replayAll(filters, task, busy, ctx), { kind: 'primary', small: false });
  const purgeButton = actionButton('Purge…', () => purge(filters, task, busy, ctx), { kind: 'danger', small: false });

  root.append(
    pageHeader('Dead letters', { subtitle: h('span', null, 'Jobs that used up their attempts, oldest first. ', count), actions: [replayAllButton, purgeButton] }),
    filterBar('/dlq', ctx.query, [
      { name: 'queue', label: 'Queue', placeholder: 'any queue' },
      { name: 'name', label: 'Job name', placeholder: 'any job' },
    ]),
    task,
    loader.el,
  );

  const render = () => {
    renderIfChanged(rows, { items: list.items, expanded: [...expanded], wholes: [...wholes.keys()] },
      () => renderRows(list.items, expanded, toggle, ctx, { wholes, showWhole }));
    renderIfChanged(more, list.hasMore, (hasMore) => loadMoreButton(hasMore, async () => {
      await list.more();
      render();
    }));
  };
  const toggle = (id) => {
    if (expanded.has(id)) expanded.delete(id);
    else expanded.add(id);
    render();
  };
  const showWhole = async (id) => {
    const entry = await api(`dlq/${seg(id)}`);
    wholes.set(id, entry.payload);
    render();
  };

  async function refresh() {
    await loader.load(async () => {
      const [counted] = await Promise.all([api('dlq/count', { query: { queue: filters.queue } }), list.refresh()]);
      renderIfChanged(count, counted.count, (n) => `${fmtNumber(n)} ${n === 1 ? 'entry' : 'entries'}${filters.queue ? ` in queue ${filters.queue}` : ''}.`);
      render();
    });
  }
  return { refresh };
}

/** The payload of a listed entry: whole, or its preview with a button that loads it whole. */
function payloadBlock(entry, { wholes, showWhole }) {
  if (wholes.has(entry.id)) return jsonBlock(wholes.get(entry.id));
  if (!entry.payload_truncated) return jsonBlock(entry.payload);
  return h('div', { class: 'payload-preview' },
    h('pre', { class: 'code' }, `${entry.payload_preview}…`),
    h('p', { class: 'muted small' }, `Preview: the payload is ${fmtBytes(entry.payload_size)} of JSON. `,
      actionButton('Show the whole payload', () => showWhole(entry.id), { title: 'Fetch this entry with its whole payload' })));
}

function renderRows(items, expanded, toggle, ctx, payloads) {
  const columns = [
    { label: 'Job · entry' }, { label: 'Queue' }, { label: 'Attempts', cls: 'num' },
    { label: 'Failed' }, { label: 'Error' }, { label: 'Replayed' }, { label: '', cls: 'actions' },
  ];
  const rows = [];
  for (const entry of items) {
    const open = expanded.has(entry.id);
    rows.push(h('tr', { dataset: { id: entry.id }, class: open ? 'open' : null },
      h('td', null, h('div', { class: 'name' }, entry.name), h('div', { class: 'mono sub' }, entry.id)),
      h('td', null, h('span', { class: 'mono' }, entry.queue)),
      h('td', { class: 'num' }, `${entry.attempts} / ${entry.max_attempts}`),
      h('td', null, relTime(entry.failed_at)),
      h('td', { class: 'error-cell', title: firstLine(entry.error) }, h('span', { class: 'error-text' }, firstLine(entry.error))),
      h('td', null, entry.replayed_at
        ? h('div', null, badge('replayed'), entry.replay_job_id ? h('div', { class: 'sub' }, idCell(entry.replay_job_id, jobHref(entry.replay_job_id))) : null)
        : h('span', { class: 'muted' }, '—')),
      h('td', { class: 'actions' },
        h('button', { type: 'button', class: 'btn btn-sm btn-ghost', 'aria-expanded': String(open), onclick: () => toggle(entry.id) }, open ? 'Hide' : 'Details'),
        actionButton(entry.replayed_at ? 'Replay again' : 'Replay', async () => {
          const job = await api(`dlq/${seg(entry.id)}/replay`, { method: 'POST' });
          toast(`${entry.name} replayed as a new job.`, { link: { href: jobHref(job.id), label: 'Open job' } });
          ctx.refresh();
        }, { title: 'Enqueue a fresh copy of this job' }))));
    if (open) {
      rows.push(h('tr', { class: 'detail-row' }, h('td', { colspan: columns.length },
        h('div', { class: 'dlq-detail' },
          kvGrid([
            ['Original job', idCell(entry.job_id, jobHref(entry.job_id))],
            ['Failed at', fmtTime(entry.failed_at)],
            ['Tenant', entry.tenant],
            ['Priority', String(entry.priority)],
            ['Timeout', entry.timeout === null ? 'none' : `${entry.timeout} s`],
            entry.replayed_at && ['Replayed at', fmtTime(entry.replayed_at)],
          ]),
          h('div', null, h('h3', null, 'Payload'), payloadBlock(entry, payloads)),
          h('div', { class: 'span-2' }, h('h3', null, 'Error'), tracebackBlock(entry.error))))));
    }
  }
  return table(columns, rows, { empty: 'The dead-letter queue is empty.', cls: 'table-dlq' });
}

// ---- long actions with progress -----------------------------------------------------------

/** A progress bar with a Stop button in `slot`; returns {update, finish, stopped}. */
function progressTask(slot, label) {
  const text = h('span', { class: 'task-text' }, `${label}…`);
  const bar = h('progress', { max: 1, value: 0 });
  const state = { stopped: false };
  const stop = h('button', { type: 'button', class: 'btn btn-sm', onclick: () => { state.stopped = true; stop.disabled = true; } }, 'Stop');
  slot.replaceChildren(h('div', { class: 'task', role: 'status' }, text, bar, stop));
  return {
    get stopped() {
      return state.stopped;
    },
    update(done, total, detail) {
      bar.max = Math.max(1, total);
      bar.value = done;
      text.textContent = `${label}… ${fmtNumber(done)} of ${fmtNumber(total)}${detail ? ` · ${detail}` : ''}`;
    },
    finish(message, kind = 'ok') {
      slot.replaceChildren(h('div', { class: `task task-${kind}`, role: 'status' },
        h('span', { class: 'task-text' }, message),
        h('button', { type: 'button', class: 'btn btn-sm btn-ghost', onclick: () => slot.replaceChildren() }, 'Dismiss')));
    },
  };
}

async function replayAll(filters, slot, busy, ctx) {
  if (busy.running) return;
  const scope = filters.queue ? ` of queue ${filters.queue}` : '';
  const which = filters.name ? ` for job ${filters.name}` : '';
  if (!(await confirmDialog(`Replay all${scope}${which}?`,
    `Every dead-letter entry${scope}${which} not replayed yet becomes a new pending job, ${REPLAY_BATCH} at a time.`,
    { confirmLabel: 'Replay all' }))) return;
  busy.running = true;
  const progress = progressTask(slot, 'Replaying');
  let replayed = 0;
  let failed = 0;
  try {
    if (filters.name) {
      // POST /dlq/replay filters by queue only; with a job-name filter, send the ids instead.
      const ids = await unreplayedIds(filters);
      for (let i = 0; i < ids.length && !progress.stopped; i += REPLAY_BATCH) {
        const res = await api('dlq/replay', { method: 'POST', body: { ids: ids.slice(i, i + REPLAY_BATCH) } });
        replayed += res.replayed.length;
        failed += res.errors.length;
        progress.update(replayed + failed, ids.length, failed ? `${failed} failed` : '');
        ctx.refresh();
      }
    } else {
      for (;;) {
        const body = { limit: REPLAY_BATCH };
        if (filters.queue) body.queue = filters.queue;
        const res = await api('dlq/replay', { method: 'POST', body });
        replayed += res.replayed.length;
        failed += res.errors.length;
        progress.update(replayed + failed, replayed + failed + res.remaining, failed ? `${failed} failed` : '');
        ctx.refresh();
        // Entries that fail to replay stay unreplayed: stop when a batch makes no progress.
        if (res.remaining <= 0 || res.replayed.length === 0 || progress.stopped) break;
      }
    }
    const message = `Replayed ${fmtNumber(replayed)} ${replayed === 1 ? 'entry' : 'entries'}${failed ? `; ${fmtNumber(failed)} could not be replayed` : ''}${progress.stopped ? ' (stopped)' : ''}.`;
    progress.finish(message, failed ? 'warn' : 'ok');
  } catch (err) {
    progress.finish(`Replay stopped after ${fmtNumber(replayed)}: ${err.message}`, 'error');
    errorToast(err);
  } finally {
    busy.running = false;
    ctx.refresh();
  }
}

async function unreplayedIds(filters) {
  const ids = [];
  let cursor = null;
  do {
    // Only the ids are needed: preview=0 leaves every payload on the server.
    const page = await api('dlq', { query: { ...filters, limit: 1000, cursor, preview: 0 } });
    for (const entry of page.items) if (!entry.replayed_at) ids.push(entry.id);
    cursor = page.next_cursor;
  } while (cursor);
  return ids;
}

const PURGE_PRESETS = [
  ['604800', 'Older than 7 days'],
  ['86400', 'Older than 1 day'],
  ['3600', 'Older than 1 hour'],
  ['2592000', 'Older than 30 days'],
  ['0', 'All of them (failed before now)'],
  ['custom', 'Failed before a date…'],
];

/** "2026-11-28T01:02" for a datetime-local input, in local time. */
function localInputValue(date) {
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

async function purge(filters, slot, busy, ctx) {
  if (busy.running) return;
  const preset = h('select', { id: 'purge-preset' }, PURGE_PRESETS.map(([value, label]) => h('option', { value }, label)));
  const custom = h('input', { id: 'purge-before', type: 'datetime-local', value: localInputValue(new Date(Date.now() - 7 * 86400000)), hidden: true });
  const summary = h('p', { class: 'muted' });
  const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const cutoff = () => {
    if (preset.value === 'custom') {
      const d = new Date(custom.value);
      return Number.isNaN(d.getTime()) ? null : d;
    }
    return new Date(Date.now() - Number(preset.value) * 1000);
  };
  const describe = () => {
    custom.hidden = preset.value !== 'custom';
    const d = cutoff();
    summary.textContent = d
      ? `Deletes every entry${filters.queue ? ` of queue ${filters.queue}` : ''} that failed before ${fmtTime(d)}, replayed or not. This cannot be undone.`
      : 'Pick a date.';
  };
  preset.addEventListener('change', describe);
  custom.addEventListener('input', describe);
  describe();
  const body = h('div', { class: 'form' },
    h('label', { for: 'purge-preset' }, 'Which entries'), preset, custom, summary,
    filters.name ? h('p', { class: 'muted small' }, `The job-name filter (${filters.name}) does not apply to a purge.`) : null,
    error);
  const before = await openDialog({
    title: `Purge dead letters${filters.queue ? ` of ${filters.queue}` : ''}`,
    body,
    confirmLabel: 'Purge',
    danger: true,
    collect: () => {
      const d = cutoff();
      if (!d) {
        error.hidden = false;
        error.textContent = 'Pick a valid date and time.';
        return null;
      }
      return d;
    },
  });
  if (!before) return;

  busy.running = true;
  const progress = progressTask(slot, 'Purging');
  let purged = 0;
  try {
    for (;;) {
      const req = { before: before.toISOString(), limit: PURGE_BATCH };
      if (filters.queue) req.queue = filters.queue;
      const res = await api('dlq/purge', { method: 'POST', body: req });
      purged += res.purged;
      progress.update(purged, purged + res.remaining);
      ctx.refresh();
      if (res.remaining <= 0 || res.purged === 0 || progress.stopped) break;
    }
    progress.finish(`Purged ${fmtNumber(purged)} ${purged === 1 ? 'entry' : 'entries'}${progress.stopped ? ' (stopped)' : ''}.`);
  } catch (err) {
    progress.finish(`Purge stopped after ${fmtNumber(purged)}: ${err.message}`, 'error');
    errorToast(err);
  } finally {
    busy.running = false;
    ctx.refresh();
  }
}
