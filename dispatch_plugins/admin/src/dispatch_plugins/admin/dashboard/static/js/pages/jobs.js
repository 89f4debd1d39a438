// Jobs: counts per state, filters (state, queue, name, tenant) kept in the URL, a paged table.

import { api } from '../api.js';
import { h } from '../dom.js';
import { filterBar, pick } from '../filters.js';
import { fmtNumber } from '../format.js';
import { PagedList } from '../paging.js';
import { href, jobHref } from '../router.js';
import { badge, idCell, Loader, loadMoreButton, pageHeader, relTime, renderIfChanged, table } from '../ui.js';

export const JOB_STATES = ['pending', 'running', 'retrying', 'completed', 'failed', 'cancelled'];
const FILTERS = ['state', 'queue', 'name', 'tenant'];

export default function jobs(root, ctx) {
  const filters = pick(ctx.query, FILTERS);
  // The table shows no payload or result: ask for none (preview=0 leaves them on the server).
  const list = new PagedList('jobs', { ...filters, preview: 0 });
  const chips = h('nav', { class: 'chips', 'aria-label': 'Jobs by state' });
  const rows = h('div');
  const more = h('div');
  const loader = new Loader(chips, h('section', { class: 'panel' }, rows, more));

  root.append(
    pageHeader('Jobs', { subtitle: 'Every job, newest first.' }),
    filterBar('/jobs', ctx.query, [
      { name: 'state', label: 'State', options: JOB_STATES.map((s) => [s, s]) },
      { name: 'queue', label: 'Queue', placeholder: 'any queue' },
      { name: 'name', label: 'Job name', placeholder: 'e.g. emails.send' },
      { name: 'tenant', label: 'Tenant', placeholder: 'any tenant' },
    ]),
    loader.el,
  );

  const render = () => {
    renderIfChanged(rows, list.items, renderRows);
    renderIfChanged(more, list.hasMore, (hasMore) => loadMoreButton(hasMore, async () => {
      await list.more();
      render();
    }));
  };

  async function refresh() {
    await loader.load(async () => {
      const [counts] = await Promise.all([
        api('jobs/counts', { query: { queue: filters.queue, tenant: filters.tenant } }),
        list.refresh(),
      ]);
      renderIfChanged(chips, counts, (c) => renderChips(c, filters));
      render();
    });
  }
  return { refresh };
}

function renderChips(counts, filters) {
  const total = JOB_STATES.reduce((sum, s) => sum + (counts[s] ?? 0), 0);
  // The counts cover the queue and tenant filters, not the name: with a name, no numbers.
  const showCounts = !filters.name;
  const chip = (state, label, count) => h('a', {
    class: ['chip', (filters.state || '') === state && 'active'],
    href: href('/jobs', { ...filters, state }),
  }, state ? h('span', { class: `dot dot-${state}` }) : null, label,
  showCounts && h('span', { class: 'chip-count' }, fmtNumber(count)));
  return [chip('', 'All', total), JOB_STATES.map((s) => chip(s, s, counts[s] ?? 0))];
}

function renderRows(items) {
  const columns = [
    { label: 'ID' }, { label: 'Name' }, { label: 'Queue' }, { label: 'State' },
    { label: 'Attempts', cls: 'num' }, { label: 'Tenant' }, { label: 'Created' }, { label: 'Updated' },
  ];
  const rows = items.map((job) => h('tr', { dataset: { id: job.id } },
    h('td', null, idCell(job.id, jobHref(job.id))),
    h('td', { class: 'name' }, job.name),
    h('td', null, h('span', { class: 'mono' }, job.queue)),
    h('td', null, badge(job.state)),
    h('td', { class: 'num' }, `${job.attempt} / ${job.max_attempts}`),
    h('td', null, job.tenant ?? h('span', { class: 'muted' }, '—')),
    h('td', null, relTime(job.created_at)),
    h('td', null, relTime(job.updated_at))));
  return table(columns, rows, { empty: 'No job matches these filters.', cls: 'table-jobs' });
}
