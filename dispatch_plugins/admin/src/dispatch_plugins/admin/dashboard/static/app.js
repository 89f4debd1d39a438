// The Dispatch dashboard: sign-in, hash routing, live polling. Pages live in js/pages/.

import { api, ApiError, clearToken, getToken, onUnauthorized, setToken } from './js/api.js';
import { h, replace } from './js/dom.js';
import { fmtClock } from './js/format.js';
import { Poller, startRelativeClock } from './js/live.js';
import cron from './js/pages/cron.js';
import dlq from './js/pages/dlq.js';
import jobDetail from './js/pages/job.js';
import jobs from './js/pages/jobs.js';
import overview from './js/pages/overview.js';
import runDetail from './js/pages/run.js';
import workers from './js/pages/workers.js';
import workflows from './js/pages/workflows.js';
import { parseHash } from './js/router.js';
import { notice, toast } from './js/ui.js';

// [first path segment, number of parameters, page, nav item, title]
const ROUTES = [
  ['overview', 0, overview, 'overview', 'Overview'],
  ['jobs', 0, jobs, 'jobs', 'Jobs'],
  ['jobs', 1, jobDetail, 'jobs', 'Job'],
  ['workflows', 0, workflows, 'workflows', 'Workflows'],
  ['runs', 0, workflows, 'workflows', 'Workflows'],
  ['runs', 1, runDetail, 'workflows', 'Run'],
  ['cron', 0, cron, 'cron', 'Cron'],
  ['dlq', 0, dlq, 'dlq', 'Dead letters'],
  ['workers', 0, workers, 'workers', 'Workers'],
];

const $ = (id) => document.getElementById(id);
const poller = new Poller({ interval: 2000, onTick: showConnection });
let page = null;

// ---- sign-in -------------------------------------------------------------------------------

/**
 * "#token=<secret>" hands the dashboard a token, then is removed from the URL. It signs in
 * only a tab that has no token yet: a link must not swap a signed-in tab to another token
 * (someone else's tenant, whose data the user would then take for theirs).
 */
function takeTokenFromFragment() {
  const match = /^#token=([^&]*)/.exec(location.hash);
  if (!match) return;
  let token = match[1];
  try {
    token = decodeURIComponent(token);
  } catch {
    // keep it as written
  }
  const current = getToken();
  if (token && !current) setToken(token);
  history.replaceState(null, '', `${location.pathname}${location.search}#/overview`);
  if (token && current && token !== current) {
    const shown = toast(
      'A link tried to sign this tab in with another token; it was ignored and you are still '
      + 'signed in as before. To use that token, sign out first, then open the link again.',
      { kind: 'error', timeout: 60000 },
    );
    shown.dataset.notice = 'token-ignored';
  }
}

function showLogin(message = null) {
  poller.stop();
  page = null;
  $('shell').hidden = true;
  $('login').hidden = false;
  const error = $('login-error');
  error.hidden = !message;
  error.textContent = message || '';
  document.title = 'Sign in · Dispatch';
  $('login-token').focus();
}

function showShell() {
  $('login').hidden = true;
  $('shell').hidden = false;
  route();
}

async function signIn(event) {
  event.preventDefault();
  const input = $('login-token');
  const token = input.value.trim();
  if (!token) return;
  const button = event.submitter || $('login-form').querySelector('button');
  button.disabled = true;
  setToken(token);
  try {
    // Any answer but 401 means the token is known (a 403 only says it lacks jobs:read).
    await api('jobs', { query: { limit: 1 } });
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      clearToken();
      showLogin(err.code === 'no_tokens_configured' ? NO_TOKENS : 'That token was not accepted.');
      return;
    }
    if (err instanceof ApiError && err.code === 'network') {
      clearToken();
      showLogin(err.message);
      return;
    }
  } finally {
    button.disabled = false;
  }
  input.value = '';
  showShell();
}

const NO_TOKENS = 'The server has no API tokens configured (DISPATCH_ADMIN_TOKENS), so it accepts none.';

onUnauthorized((err) => {
  const had = getToken();
  clearToken();
  if (err.code === 'no_tokens_configured') showLogin(NO_TOKENS);
  else showLogin(had ? 'The server did not accept your token. Sign in again.' : null);
});

// ---- routing -------------------------------------------------------------------------------

function route() {
  if (!getToken()) {
    showLogin();
    return;
  }
  const { segments, query } = parseHash();
  if (!segments.length) {
    history.replaceState(null, '', `${location.pathname}${location.search}#/overview`);
    segments.push('overview');
  }
  const [name, ...params] = segments;
  const match = ROUTES.find(([path, arity]) => path === name && arity === params.length);
  const main = $('main');
  for (const link of document.querySelectorAll('[data-nav]')) {
    const active = match && link.dataset.nav === match[3];
    link.classList.toggle('active', Boolean(active));
    if (active) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (!match) {
    poller.stop();
    replace(main, notice('warn', 'No such page.', 'Pick one on the left.'));
    document.title = 'Dispatch';
    return;
  }
  const [, , mount, , title] = match;
  document.title = `${title} · Dispatch`;
  const root = h('div', { class: 'page', dataset: { page: name } });
  replace(main, root);
  const ctx = { params, query, refresh: () => poller.now() };
  page = mount(root, ctx);
  poller.set(page.refresh);
}

// ---- live indicator ------------------------------------------------------------------------

function showConnection(err) {
  const banner = $('banner');
  if (err instanceof ApiError && err.code === 'network') {
    banner.hidden = false;
    banner.textContent = 'Lost the connection to the Dispatch server. Retrying every 2 seconds…';
    return;
  }
  banner.hidden = true;
  if (!err) $('live-updated').textContent = `updated ${fmtClock(new Date(), { seconds: true })}`;
  else if (!(err instanceof ApiError)) console.error(err); // a bug in a page: keep polling
}

function toggleLive() {
  const button = $('live-toggle');
  const live = button.getAttribute('aria-pressed') !== 'true';
  button.setAttribute('aria-pressed', String(live));
  $('live-label').textContent = live ? 'Live' : 'Paused';
  poller.setPaused(!live);
}

// ---- start ---------------------------------------------------------------------------------

function start() {
  takeTokenFromFragment();
  $('login-form').addEventListener('submit', signIn);
  $('sign-out').addEventListener('click', () => {
    clearToken();
    showLogin();
  });
  $('live-toggle').addEventListener('click', toggleLive);
  window.addEventListener('hashchange', () => {
    takeTokenFromFragment();
    if (getToken()) showShell();
    else showLogin();
  });
  startRelativeClock();
  if (getToken()) showShell();
  else showLogin();
}

start();
