// Cron: every schedule with its next run; trigger now, enable, disable.

import { api, seg } from '../api.js';
import { h } from '../dom.js';
import { fmtTime } from '../format.js';
import { jobHref } from '../router.js';
import {
  actionButton, badge, idCell, Loader, pageHeader, panel, relTime, renderIfChanged, table, toast,
} from '../ui.js';

export default function cron(root, ctx) {
  const rows = h('div');
  const loader = new Loader(panel(null, rows));
  root.append(pageHeader('Cron', { subtitle: 'Recurring jobs; the leader enqueues each tick exactly once.' }), loader.el);

  async function refresh() {
    await loader.load(async () => {
      const page = await api('cron', { query: { limit: 1000 } });
      renderIfChanged(rows, page.items, (items) => renderRows(items, ctx));
    });
  }
  return { refresh };
}

function nextRuns(entry) {
  if (!entry.enabled) return h('span', { class: 'muted' }, 'disabled');
  // The API gives the next run; a list of upcoming ones is shown when it provides one.
  const upcoming = Array.isArray(entry.next_runs) && entry.next_runs.length ? entry.next_runs : [entry.next_run_at];
  return h('div', { class: 'next-runs' },
    h('div', null, h('span', { class: 'next-run' }, fmtTime(upcoming[0])), ' ', h('span', { class: 'muted' }, '· ', relTime(upcoming[0]))),
    upcoming.slice(1, 3).map((t) => h('div', { class: 'muted small' }, fmtTime(t))));
}

function renderRows(items, ctx) {
  const columns = [
    { label: 'Name' }, { label: 'Schedule' }, { label: 'Job' }, { label: 'Status' },
    { label: 'Next run' }, { label: 'Last run' }, { label: '', cls: 'actions' },
  ];
  const rows = items.map((entry) => h('tr', { dataset: { cron: entry.name } },
    h('td', { class: 'name' }, entry.name),
    h('td', null, h('code', { class: 'mono' }, entry.expr), entry.timezone && entry.timezone !== 'UTC' ? h('span', { class: 'muted' }, ` ${entry.timezone}`) : h('span', { class: 'muted' }, ' UTC')),
    h('td', null, h('span', { class: 'mono' }, entry.job_name), entry.queue ? h('span', { class: 'muted' }, ` on ${entry.queue}`) : null),
    h('td', null, entry.enabled ? badge('enabled') : badge('disabled')),
    h('td', null, nextRuns(entry)),
    h('td', null, entry.last_run_at
      ? h('div', null, relTime(entry.last_run_at), entry.last_job_id ? h('div', { class: 'small' }, idCell(entry.last_job_id, jobHref(entry.last_job_id))) : null)
      : h('span', { class: 'muted' }, 'never')),
    h('td', { class: 'actions' },
      actionButton('Trigger now', async () => {
        const job = await api(`cron/${seg(entry.name)}/trigger`, { method: 'POST' });
        toast(`Enqueued ${entry.job_name}.`, { link: { href: jobHref(job.id), label: 'Open job' } });
        ctx.refresh();
      }, { title: 'Enqueue its job now, outside the schedule' }),
      entry.enabled
        ? actionButton('Disable', async () => {
          await api(`cron/${seg(entry.name)}/disable`, { method: 'POST' });
          toast(`${entry.name} disabled.`);
          ctx.refresh();
        }, { confirm: { title: `Disable ${entry.name}?`, text: 'No tick fires until it is enabled again.', confirmLabel: 'Disable' } })
        : actionButton('Enable', async () => {
          await api(`cron/${seg(entry.name)}/enable`, { method: 'POST' });
          toast(`${entry.name} enabled.`);
          ctx.refresh();
        }))));
  return table(columns, rows, { empty: 'No cron schedule is registered.' });
}
