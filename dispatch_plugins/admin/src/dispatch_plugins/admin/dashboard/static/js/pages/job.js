// One job: its state and actions (cancel, retry), attempts, times, payload, result, error.

import { api, seg } from '../api.js';
import { h } from '../dom.js';
import { fmtDuration, toDate } from '../format.js';
import { runHref } from '../router.js';
import {
  absTime, actionButton, badge, jsonBlock, kvGrid, Loader, pageHeader, panel, renderIfChanged,
  toast, tracebackBlock,
} from '../ui.js';

const CANCELLABLE = new Set(['pending', 'retrying', 'running']);
const RETRYABLE = new Set(['failed', 'cancelled']);
// The job that drives a workflow run carries {"run_id": ...} as its payload.
const WORKFLOW_DRIVER = 'dispatch.workflow';

export default function jobDetail(root, ctx) {
  const id = ctx.params[0];
  const view = h('div');
  const loader = new Loader(view);
  root.append(loader.el);

  async function refresh() {
    await loader.load(async () => {
      const job = await api(`jobs/${seg(id)}`);
      renderIfChanged(view, job, (j) => render(j, ctx));
    });
  }
  return { refresh };
}

function render(job, ctx) {
  const actions = [];
  if (RETRYABLE.has(job.state)) {
    actions.push(actionButton('Retry', async () => {
      await api(`jobs/${seg(job.id)}/retry`, { method: 'POST' });
      toast('Job queued again: its attempts start over.');
      ctx.refresh();
    }, { kind: 'primary', small: false, title: 'Run this job again from its first attempt' }));
  }
  if (CANCELLABLE.has(job.state)) {
    actions.push(actionButton('Cancel', async () => {
      await api(`jobs/${seg(job.id)}/cancel`, { method: 'POST' });
      toast('Job cancelled.');
      ctx.refresh();
    }, {
      kind: 'danger', small: false,
      confirm: { title: 'Cancel this job?', text: 'A pending job will not run; a running one is asked to stop.', confirmLabel: 'Cancel job', danger: true },
    }));
  }
  const started = toDate(job.started_at);
  const finished = toDate(job.finished_at);
  const runId = job.name === WORKFLOW_DRIVER && job.payload && typeof job.payload === 'object' ? job.payload.run_id : null;

  return [
    pageHeader(job.name, {
      subtitle: h('span', null, h('span', { class: 'mono', id: 'job-id' }, job.id), ' ', badge(job.state)),
      actions,
    }),
    h('div', { class: 'grid-detail' },
      panel('Details', kvGrid([
        ['State', badge(job.state)],
        ['Queue', h('span', { class: 'mono' }, job.queue)],
        ['Attempts', attempts(job)],
        ['Priority', String(job.priority)],
        ['Timeout', job.timeout === null ? 'none' : `${job.timeout} s`],
        ['Tenant', job.tenant],
        ['Unique key', job.unique_key && h('span', { class: 'mono' }, job.unique_key)],
        runId && ['Workflow run', h('a', { class: 'mono', href: runHref(runId) }, runId)],
        job.worker_id && ['Worker', h('span', { class: 'mono' }, job.worker_id)],
        job.lease_expires_at && ['Lease until', absTime(job.lease_expires_at)],
      ])),
      panel('Timestamps', kvGrid([
        ['Created', absTime(job.created_at)],
        ['Run at', absTime(job.run_at)],
        ['Started', absTime(job.started_at)],
        ['Finished', absTime(job.finished_at)],
        ['Updated', absTime(job.updated_at)],
        started && finished && ['Last attempt took', fmtDuration(finished - started)],
      ]))),
    job.last_error && panel(job.state === 'completed' ? 'Error of an earlier attempt' : 'Last error',
      tracebackBlock(job.last_error), { cls: 'panel-error' }),
    h('div', { class: 'grid-2' },
      panel('Payload', jsonBlock(job.payload)),
      panel('Result', job.state === 'completed' || job.result !== null
        ? jsonBlock(job.result)
        : h('p', { class: 'muted' }, 'No result yet.'))),
    job.headers && Object.keys(job.headers).length > 0 && panel('Headers', jsonBlock(job.headers)),
  ];
}

/** "2 of 4", with one mark per attempt: failed, succeeded, running, or not used yet. */
const LAST_ATTEMPT = { completed: 'ok', failed: 'failed', retrying: 'failed', running: 'current' };

function attempts(job) {
  const marks = h('span', { class: 'attempts', 'aria-hidden': 'true' });
  for (let i = 1; i <= Math.min(job.max_attempts, 20); i += 1) {
    // Attempts before the last one failed (or the job would not have gone on).
    const cls = i < job.attempt ? 'failed' : i === job.attempt ? (LAST_ATTEMPT[job.state] || 'used') : null;
    marks.append(h('span', { class: ['attempt', cls] }));
  }
  return h('span', null, `${job.attempt} of ${job.max_attempts} `, marks);
}
