// Overview: job counts, throughput and failure rate over a chosen window, queue depths, and a
// warning when jobs wait for a name no running worker knows.

import { api, seg } from '../api.js';
import { failureRateChart, throughputChart } from '../charts.js';
import { h } from '../dom.js';
import { fmtNumber, fmtPercent } from '../format.js';
import { href } from '../router.js';
import {
  actionButton, badge, Loader, notice, pageHeader, panel, renderIfChanged, table, toast,
} from '../ui.js';

// window and bucket in seconds (the API allows at most 1000 buckets, each ≥ 10 s)
const WINDOWS = [
  { label: '5 min', window: 300, bucket: 10 },
  { label: '15 min', window: 900, bucket: 15 },
  { label: '1 h', window: 3600, bucket: 60 },
  { label: '6 h', window: 21600, bucket: 300 },
  { label: '24 h', window: 86400, bucket: 900 },
  { label: '7 d', window: 604800, bucket: 7200 },
];
const DEFAULT_WINDOW = 3600;
const STATES = ['pending', 'running', 'retrying', 'completed', 'failed', 'cancelled'];

export default function overview(root, ctx) {
  const wanted = Number(ctx.query.get('window')) || DEFAULT_WINDOW;
  const range = WINDOWS.find((w) => w.window === wanted) || WINDOWS.find((w) => w.window === DEFAULT_WINDOW);

  const windowPicker = h('nav', { class: 'segmented', 'aria-label': 'Time window' },
    WINDOWS.map((w) => h('a', {
      href: href('/overview', { window: w.window === DEFAULT_WINDOW ? '' : w.window }),
      class: w === range ? 'active' : null,
      'aria-current': w === range ? 'true' : null,
    }, w.label)));
  const unhandled = h('div');
  const cards = h('div', { class: 'cards' });
  const throughput = h('div', { class: 'chart-box' });
  const failure = h('div', { class: 'chart-box' });
  const queues = h('div');
  const loader = new Loader(
    unhandled,
    cards,
    h('div', { class: 'grid-2' },
      panel(`Throughput · last ${range.label}`, throughput, { cls: 'panel-chart' }),
      panel(`Failure rate · last ${range.label}`, failure, { cls: 'panel-chart' })),
    panel('Queue depths', queues),
  );
  root.append(
    pageHeader('Overview', { subtitle: 'Jobs, throughput and queues across the cluster.', actions: windowPicker }),
    loader.el,
  );

  async function refresh() {
    await loader.load(async () => {
      const stats = await api('stats', { query: { window: range.window, bucket: range.bucket } });
      renderIfChanged(unhandled, { rows: stats.unhandled, workers: stats.workers }, renderUnhandled);
      renderIfChanged(cards, { jobs: stats.jobs, dlq: stats.dlq, workers: stats.workers }, renderCards);
      renderIfChanged(throughput, stats.throughput, renderThroughput);
      renderIfChanged(failure, stats.throughput, renderFailure);
      renderIfChanged(queues, stats.queues, (items) => renderQueues(items, ctx));
    });
  }
  return { refresh };
}

function card(label, value, { link = null, state = null, hint = null } = {}) {
  const inner = [
    h('span', { class: 'card-label' }, state ? h('span', { class: `dot dot-${state}` }) : null, label),
    h('span', { class: 'card-value' }, value),
    hint && h('span', { class: 'card-hint' }, hint),
  ];
  return link ? h('a', { class: 'card', href: link }, inner) : h('div', { class: 'card' }, inner);
}

function renderCards({ jobs, dlq, workers }) {
  const counts = jobs || {};
  return [
    STATES.map((state) => card(state[0].toUpperCase() + state.slice(1), fmtNumber(counts[state] ?? 0), {
      link: href('/jobs', { state }), state,
    })),
    card('Dead letters', fmtNumber(dlq ?? 0), { link: '#/dlq', state: 'dead' }),
    workers
      ? card('Workers', fmtNumber(workers.running), {
        link: '#/workers',
        hint: workers.leader ? h('span', null, 'leader ', h('span', { class: 'mono' }, workers.leader)) : 'no leader',
      })
      : card('Workers', '—', { hint: 'operators only' }),
  ];
}

// Jobs no running worker takes (the API counts them by queue and name): without this panel they
// would wait forever without a word. Nothing is shown when there are none.
function renderUnhandled({ rows, workers }) {
  if (!rows || !rows.length) return null;
  const total = rows.reduce((sum, r) => sum + r.count, 0);
  const jobs = `${fmtNumber(total)} ${total === 1 ? 'job waits' : 'jobs wait'}`;
  // Operators see the worker count: with none running, the cause is plainer.
  const none = workers && workers.running === 0;
  const title = none ? `${jobs}, and no worker is running` : `${jobs} for a name no running worker knows`;
  const cause = none
    ? 'Start a worker whose app imports the modules that define these jobs.'
    : 'Usually the job is defined in a module the workers do not import, or it was enqueued under an old name.';
  const columns = [{ label: 'Queue' }, { label: 'Job name' }, { label: 'Waiting', cls: 'num' }];
  const items = rows.map((r) => h('tr', { dataset: { unhandledQueue: r.queue, unhandledName: r.name } },
    h('td', null, h('span', { class: 'mono' }, r.queue)),
    h('td', { class: 'name' }, h('a', { href: href('/jobs', { name: r.name, queue: r.queue }) }, r.name)),
    h('td', { class: 'num' }, fmtNumber(r.count))));
  return h('section', { class: 'panel panel-warn', id: 'unhandled', role: 'alert' },
    h('header', { class: 'panel-head' }, h('h2', null, title)),
    h('p', { class: 'panel-note' }, cause),
    h('div', { class: 'panel-body' }, table(columns, items)));
}

function legend(items) {
  return h('div', { class: 'legend' }, items.map(([cls, label]) => h('span', null, h('span', { class: `swatch ${cls}` }), label)));
}

function totals(buckets) {
  const completed = buckets.reduce((sum, b) => sum + b.completed, 0);
  const failed = buckets.reduce((sum, b) => sum + b.failed, 0);
  return { completed, failed, rate: completed + failed ? failed / (completed + failed) : null };
}

function renderThroughput(buckets) {
  const t = totals(buckets || []);
  return [
    h('div', { class: 'chart-meta' },
      legend([['swatch-completed', 'completed'], ['swatch-failed', 'failed']]),
      h('span', { class: 'muted' }, `${fmtNumber(t.completed)} completed · ${fmtNumber(t.failed)} failed`)),
    throughputChart(buckets || []),
  ];
}

function renderFailure(buckets) {
  const t = totals(buckets || []);
  return [
    h('div', { class: 'chart-meta' },
      legend([['swatch-rate', 'failed ÷ finished']]),
      h('span', { class: 'muted' }, t.rate === null ? 'no job finished' : `${fmtPercent(t.rate)} over the window`)),
    failureRateChart(buckets || []),
  ];
}

function limits(config) {
  if (!config) return h('span', { class: 'muted' }, '—');
  const parts = [];
  if (config.concurrency) parts.push(`≤ ${config.concurrency} at once`);
  if (config.rate) parts.push(`${config.rate}/s${config.burst ? ` (burst ${config.burst})` : ''}`);
  if (config.per_tenant) parts.push('per tenant');
  return parts.length ? parts.join(' · ') : h('span', { class: 'muted' }, '—');
}

function renderQueues(items, ctx) {
  if (items === null || items === undefined) {
    return notice('info', 'Queue depths need an operator token.',
      'Your token is bound to a tenant; queues are shared by every tenant.');
  }
  const columns = [
    { label: 'Queue' }, { label: 'Waiting', cls: 'num' }, { label: 'Running', cls: 'num' },
    { label: 'Done / min', cls: 'num' }, { label: 'Limits' }, { label: 'Status' }, { label: '', cls: 'actions' },
  ];
  const rows = items.map((q) => h('tr', { dataset: { queue: q.name } },
    h('td', null, h('a', { class: 'mono', href: href('/jobs', { queue: q.name }) }, q.name)),
    h('td', { class: 'num depth' }, fmtNumber(q.depth)),
    h('td', { class: 'num' }, fmtNumber(q.running)),
    h('td', { class: 'num' }, fmtNumber(q.completed_last_minute)),
    h('td', null, limits(q.config)),
    h('td', null, q.paused ? badge('paused') : badge('active')),
    h('td', { class: 'actions' }, q.paused
      ? actionButton('Resume', async () => {
        await api(`queues/${seg(q.name)}/resume`, { method: 'POST' });
        toast(`Queue ${q.name} resumed.`);
        ctx.refresh();
      })
      : actionButton('Pause', async () => {
        await api(`queues/${seg(q.name)}/pause`, { method: 'POST' });
        toast(`Queue ${q.name} paused: workers stop taking its jobs.`);
        ctx.refresh();
      }, { confirm: { title: `Pause queue ${q.name}?`, text: 'Workers stop claiming its jobs until it is resumed; running jobs finish.', confirmLabel: 'Pause' } }))));
  return table(columns, rows, { empty: 'No queue has seen a job yet.' });
}
