// Live updates: refresh the current page every few seconds, never two refreshes at once, and
// not while the tab is hidden or the user paused updates.

import { fmtRelative } from './format.js';

export class Poller {
  constructor({ interval = 2000, onTick = () => {} } = {}) {
    this.interval = interval;
    this.onTick = onTick;
    this.task = null;
    this.timer = null;
    this.running = false; // a refresh is in flight
    this.paused = false; // by the user
    this.generation = 0;
    document.addEventListener('visibilitychange', () => {
      if (document.hidden) this.clear();
      else this.now();
    });
  }

  /** Make `task` (an async function) the one to poll, and run it now. */
  set(task) {
    this.task = task;
    this.generation += 1;
    return this.now();
  }

  stop() {
    this.task = null;
    this.generation += 1;
    this.clear();
  }

  setPaused(paused) {
    this.paused = paused;
    if (paused) this.clear();
    else this.now();
  }

  clear() {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Refresh now (after the one in flight, if any), then keep polling. */
  async now() {
    this.clear();
    if (!this.task) return;
    if (this.running) {
      this.again = true;
      return;
    }
    const generation = this.generation;
    this.running = true;
    try {
      await this.task();
      this.onTick(null);
    } catch (err) {
      this.onTick(err);
    } finally {
      this.running = false;
    }
    if (this.again) {
      this.again = false;
      this.now();
      return;
    }
    if (generation === this.generation) this.schedule();
  }

  schedule() {
    this.clear();
    if (!this.task || this.paused || document.hidden) return;
    this.timer = setTimeout(() => this.now(), this.interval);
  }
}

/** Keep every <time data-relative> element's text ("3 s ago") current. */
export function startRelativeClock() {
  const tick = () => {
    const now = Date.now();
    for (const el of document.querySelectorAll('time[data-relative]')) {
      el.textContent = fmtRelative(el.dateTime, now);
    }
  };
  setInterval(tick, 1000);
}
