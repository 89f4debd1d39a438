// Workflows: the registered definitions, and their runs with filters (state, name).

import { api } from '../api.js';
import { h } from '../dom.js';
import { filterBar, pick } from '../filters.js';
import { PagedList } from '../paging.js';
import { href, runHref } from '../router.js';
import {
  badge, idCell, Loader, loadMoreButton, pageHeader, panel, relTime, renderIfChanged, table,
} from '../ui.js';

export const RUN_STATES = ['running', 'sleeping', 'waiting', 'completed', 'failed', 'cancelled'];

export default function workflows(root, ctx) {
  const filters = pick(ctx.query, ['state', 'name']);
  // The table shows no input or output: ask for none (preview=0 leaves them on the server).
  const runs = new PagedList('runs', { ...filters, preview: 0 });
  const definitions = h('div');
  const runRows = h('div');
  const more = h('div');
  const filterSlot = h('div');
  const loader = new Loader(
    panel('Definitions', definitions),
    panel('Runs', [filterSlot, runRows, more]),
  );
  root.append(pageHeader('Workflows', { subtitle: 'Durable workflows and their runs, newest first.' }), loader.el);

  const render = () => {
    renderIfChanged(runRows, runs.items, renderRuns);
    renderIfChanged(more, runs.hasMore, (hasMore) => loadMoreButton(hasMore, async () => {
      await runs.more();
      render();
    }));
  };

  async function refresh() {
    await loader.load(async () => {
      const [defs] = await Promise.all([api('workflows', { query: { limit: 1000 } }), runs.refresh()]);
      renderIfChanged(definitions, defs.items, renderDefinitions);
      // The name filter offers the registered workflows; rebuilt only when they change.
      renderIfChanged(filterSlot, defs.items.map((d) => d.name), (names) => filterBar('/workflows', ctx.query, [
        { name: 'state', label: 'State', options: RUN_STATES.map((s) => [s, s]) },
        { name: 'name', label: 'Workflow', options: names.map((n) => [n, n]) },
      ]));
      render();
    });
  }
  return { refresh };
}

function renderDefinitions(items) {
  const columns = [{ label: 'Name' }, { label: 'Version', cls: 'num' }, { label: 'Queue' }, { label: '' }];
  const rows = items.map((d) => h('tr', null,
    h('td', { class: 'name' }, d.name),
    h('td', { class: 'num' }, String(d.version)),
    h('td', null, h('span', { class: 'mono' }, d.queue)),
    h('td', { class: 'actions' }, h('a', { href: href('/workflows', { name: d.name }) }, 'Runs →'))));
  return table(columns, rows, { empty: 'No workflow is registered with this engine.' });
}

function renderRuns(items) {
  const columns = [
    { label: 'Run' }, { label: 'Workflow' }, { label: 'State' }, { label: 'Waiting for' },
    { label: 'Tenant' }, { label: 'Started' }, { label: 'Updated' },
  ];
  const rows = items.map((run) => h('tr', { dataset: { id: run.id } },
    h('td', null, idCell(run.id, runHref(run.id))),
    h('td', { class: 'name' }, run.name, h('span', { class: 'muted' }, ` v${run.version}`)),
    h('td', null, badge(run.state)),
    h('td', null, waiting(run)),
    h('td', null, run.tenant ?? h('span', { class: 'muted' }, '—')),
    h('td', null, relTime(run.created_at)),
    h('td', null, relTime(run.updated_at))));
  return table(columns, rows, { empty: 'No run matches these filters.' });
}

function waiting(run) {
  if (run.state === 'waiting' && run.waiting_for) return h('span', null, 'event ', h('span', { class: 'mono' }, run.waiting_for));
  if (run.state === 'sleeping' && run.wake_at) return h('span', null, 'wakes ', relTime(run.wake_at));
  return h('span', { class: 'muted' }, '—');
}
