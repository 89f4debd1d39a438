// One workflow run: state and cancel, a step timeline, the steps' outputs and errors.

import { api, seg } from '../api.js';
import { h } from '../dom.js';
import { fmtDuration, fmtTime, toDate } from '../format.js';
import { runHref } from '../router.js';
import {
  absTime, actionButton, badge, jsonBlock, kvGrid, Loader, pageHeader, panel, renderIfChanged,
  table, toast, tracebackBlock,
} from '../ui.js';

const FINISHED = new Set(['completed', 'failed', 'cancelled']);

export default function runDetail(root, ctx) {
  const id = ctx.params[0];
  const top = h('div');
  const bars = h('div');
  const bottom = h('div');
  const loader = new Loader(top, panel('Timeline', bars, { cls: 'panel-timeline' }), bottom);
  root.append(loader.el);

  async function refresh() {
    await loader.load(async () => {
      const { run, steps } = await api(`runs/${seg(id)}/timeline`);
      renderIfChanged(top, run, () => renderTop(run, ctx));
      // An unfinished run's bars grow until now: redraw them at every poll (only them, so an
      // opened step output below stays open).
      const key = FINISHED.has(run.state) ? { run, steps } : { run, steps, now: Date.now() };
      renderIfChanged(bars, key, () => timeline(run, steps));
      renderIfChanged(bottom, { run, steps }, () => renderBottom(run, steps, ctx));
    });
  }
  return { refresh };
}

function renderTop(run, ctx) {
  const finished = FINISHED.has(run.state);
  const actions = finished ? [] : [actionButton('Cancel run', async () => {
    await api(`runs/${seg(run.id)}/cancel`, { method: 'POST' });
    toast('Run cancelled.');
    ctx.refresh();
  }, {
    kind: 'danger', small: false,
    confirm: { title: 'Cancel this run?', text: 'Its compensations run, then it stops for good.', confirmLabel: 'Cancel run', danger: true },
  })];
  const created = toDate(run.created_at);
  const ended = toDate(run.finished_at);
  return [
    pageHeader(run.name, {
      subtitle: h('span', null, h('span', { class: 'mono', id: 'run-id' }, run.id), ' ', badge(run.state)),
      actions,
    }),
    h('div', { class: 'grid-detail' },
      panel('Details', kvGrid([
        ['State', badge(run.state)],
        ['Version', String(run.version)],
        ['Tenant', run.tenant],
        ['Correlation key', run.correlation_key && h('span', { class: 'mono' }, run.correlation_key)],
        ['Parent run', run.parent_run_id && h('a', { class: 'mono', href: runHref(run.parent_run_id) }, run.parent_run_id)],
        run.waiting_for && ['Waiting for', h('span', { class: 'mono' }, run.waiting_for)],
        run.wake_at && ['Wakes at', absTime(run.wake_at)],
      ])),
      panel('Timestamps', kvGrid([
        ['Started', absTime(run.created_at)],
        ['Updated', absTime(run.updated_at)],
        ['Finished', absTime(run.finished_at)],
        created && ended && ['Took', fmtDuration(ended - created)],
      ]))),
    run.error && panel('Error', tracebackBlock(run.error), { cls: 'panel-error' }),
  ];
}

function renderBottom(run, steps, ctx) {
  return [
    panel('Steps', stepsTable(run, steps, ctx)),
    h('div', { class: 'grid-2' },
      panel('Input', jsonBlock(run.input)),
      panel('Output', run.state === 'completed' ? jsonBlock(run.output) : h('p', { class: 'muted' }, 'No output yet.'))),
  ];
}

/** Where each step falls between the run's start and its end (or now): one bar per step. */
function timeline(run, steps) {
  if (!steps.length) return h('p', { class: 'muted' }, 'No step has started yet.');
  const now = Date.now();
  const times = (step) => {
    const start = toDate(step.started_at).getTime();
    const end = step.finished_at ? toDate(step.finished_at).getTime() : now;
    const planned = step.state === 'pending' && step.wake_at ? toDate(step.wake_at).getTime() : null;
    return { start, end: Math.max(start, end), planned };
  };
  const spans = steps.map(times);
  const t0 = Math.min(toDate(run.created_at).getTime(), ...spans.map((t) => t.start));
  const runEnd = run.finished_at ? toDate(run.finished_at).getTime() : now;
  const t1 = Math.max(runEnd, ...spans.map((t) => Math.max(t.end, t.planned ?? 0)));
  const total = Math.max(1, t1 - t0);
  const pct = (t) => ((t - t0) / total) * 100;

  const axis = h('div', { class: 'tl-axis' });
  for (let i = 0; i <= 4; i += 1) {
    const at = t0 + (total * i) / 4;
    axis.append(h('span', { class: 'tl-tick', style: { left: `${(i / 4) * 100}%` } }, i === 0 ? '0' : `+${fmtDuration(at - t0)}`));
  }

  const rows = steps.map((step, i) => {
    const { start, end, planned } = spans[i];
    const left = pct(start);
    const width = Math.max(0.6, pct(end) - left);
    const took = step.finished_at ? fmtDuration(end - start) : `${fmtDuration(end - start)} so far`;
    const track = h('div', { class: 'tl-track' },
      h('div', {
        class: ['tl-bar', `tl-${step.state}`],
        style: { left: `${left}%`, width: `${Math.min(width, 100 - left)}%` },
        title: `${step.name} (${step.kind}) — ${step.state}\n${fmtTime(step.started_at)} → ${step.finished_at ? fmtTime(step.finished_at) : 'now'} · ${took}`,
      }));
    if (planned && planned > end) {
      track.append(h('div', {
        class: 'tl-bar tl-planned',
        style: { left: `${pct(end)}%`, width: `${Math.max(0.6, pct(planned) - pct(end))}%` },
        title: `${step.kind === 'event' ? 'gives up waiting' : 'wakes'} at ${fmtTime(new Date(planned))}`,
      }));
    }
    return h('div', { class: 'tl-row', dataset: { step: step.name } },
      h('div', { class: 'tl-label' },
        h('span', { class: 'tl-seq' }, `#${step.seq}`),
        h('span', { class: 'tl-name' }, step.name),
        h('span', { class: 'tl-kind' }, step.kind)),
      track,
      h('div', { class: 'tl-took' }, took));
  });
  return h('div', { class: 'timeline' },
    h('div', { class: 'tl-row tl-head' }, h('div', { class: 'tl-label' }), axis, h('div', { class: 'tl-took' })),
    rows,
    h('div', { class: 'legend' },
      ['completed', 'failed', 'pending'].map((state) => h('span', null, h('span', { class: `swatch tl-${state}` }), state)),
      h('span', null, h('span', { class: 'swatch tl-planned' }), 'until its timer or timeout')));
}

function stepsTable(run, steps, ctx) {
  const finished = FINISHED.has(run.state);
  const columns = [
    { label: '#', cls: 'num' }, { label: 'Step' }, { label: 'Kind' }, { label: 'State' },
    { label: 'Attempts', cls: 'num' }, { label: 'Started' }, { label: 'Output / error' },
    finished ? { label: '', cls: 'actions' } : null,
  ].filter(Boolean);
  const rows = steps.map((step) => h('tr', null,
    h('td', { class: 'num' }, String(step.seq)),
    h('td', { class: 'name' }, step.name),
    h('td', null, step.kind),
    h('td', null, badge(step.state)),
    h('td', { class: 'num' }, String(step.attempts)),
    h('td', null, fmtTime(step.started_at)),
    h('td', { class: 'output' }, step.error
      ? h('details', null, h('summary', { class: 'error-text' }, 'error'), tracebackBlock(step.error))
      : step.output === null || step.output === undefined
        ? h('span', { class: 'muted' }, '—')
        : h('details', null, h('summary', null, 'output'), jsonBlock(step.output))),
    finished && h('td', { class: 'actions' }, actionButton('Replay from here', async () => {
      const fork = await api(`runs/${seg(run.id)}/replay`, { method: 'POST', body: { from_step: step.name } });
      toast('Replay started as a new run.', { link: { href: runHref(fork.id), label: 'Open' } });
    }, {
      title: 'Start a new run that keeps the steps before this one and re-runs the rest',
      confirm: { title: `Replay from “${step.name}”?`, text: 'A new run starts: the steps before this one keep their recorded results, this one and the rest run again.', confirmLabel: 'Replay' },
    }))));
  return table(columns, rows, { empty: 'No step yet.' });
}
