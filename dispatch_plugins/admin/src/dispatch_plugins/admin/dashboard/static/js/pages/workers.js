// Workers: every registered worker process, the leader marked.

import { api } from '../api.js';
import { h } from '../dom.js';
import { fmtNumber } from '../format.js';
import { badge, Loader, pageHeader, panel, relTime, renderIfChanged, table } from '../ui.js';

export default function workers(root) {
  const summary = h('div');
  const rows = h('div');
  const loader = new Loader(summary, panel(null, rows));
  root.append(pageHeader('Workers', { subtitle: 'Worker processes and the leader, which runs cron, timers and rescues.' }), loader.el);

  async function refresh() {
    await loader.load(async () => {
      const page = await api('workers', { query: { limit: 1000 } });
      renderIfChanged(summary, { leader: page.leader, items: page.items.map((w) => w.state) }, () => renderSummary(page));
      renderIfChanged(rows, { items: page.items, leader: page.leader }, () => renderRows(page.items, page.leader));
    });
  }
  return { refresh };
}

function renderSummary(page) {
  const running = page.items.filter((w) => w.state === 'running').length;
  return h('div', { class: 'summary' },
    h('span', null, h('strong', null, fmtNumber(running)), ' running'),
    h('span', null, 'Leader: ', page.leader ? h('span', { class: 'mono', id: 'leader-id' }, page.leader) : h('span', { class: 'muted' }, 'none elected')));
}

function renderRows(items, leader) {
  const columns = [
    { label: 'Worker' }, { label: 'Host' }, { label: 'PID', cls: 'num' }, { label: 'State' },
    { label: 'Queues' }, { label: 'Concurrency', cls: 'num' }, { label: 'Version' },
    { label: 'Started' }, { label: 'Last seen' },
  ];
  const rows = items.map((w) => h('tr', { dataset: { worker: w.id } },
    h('td', null, h('span', { class: 'mono' }, w.id), ' ', (w.leader || w.id === leader) ? badge('leader') : null),
    h('td', null, w.hostname),
    h('td', { class: 'num' }, String(w.pid)),
    h('td', null, badge(w.state)),
    h('td', null, w.queues && w.queues.length ? w.queues.map((q) => h('span', { class: 'tag mono' }, q)) : h('span', { class: 'muted' }, 'all')),
    h('td', { class: 'num' }, String(w.concurrency)),
    h('td', null, h('span', { class: 'mono' }, w.version)),
    h('td', null, relTime(w.started_at)),
    h('td', null, relTime(w.last_seen))));
  return table(columns, rows, { empty: 'No worker has registered. Start one with “dispatch worker”.' });
}
