// A cursor-paged list that live-refreshes: "Load more" follows next_cursor and appends; each
// poll re-reads from the start as many items as are shown, so new items appear at the top.

import { api } from './api.js';

const MAX_LIMIT = 1000; // the API's largest page

export class PagedList {
  constructor(path, query = {}, { pageSize = 50 } = {}) {
    this.path = path;
    this.query = query;
    this.pageSize = pageSize;
    this.items = [];
    this.nextCursor = null;
    this.wanted = pageSize;
    this.loaded = false;
    // Bumped by "Load more" so that a poll that started before it cannot undo it.
    this.version = 0;
  }

  get hasMore() {
    return Boolean(this.nextCursor);
  }

  async refresh() {
    const version = this.version;
    const page = await api(this.path, {
      query: { ...this.query, limit: Math.min(MAX_LIMIT, Math.max(this.pageSize, this.wanted)) },
    });
    if (version !== this.version) return;
    this.items = page.items;
    this.nextCursor = page.next_cursor;
    this.loaded = true;
  }

  async more() {
    if (!this.nextCursor) return;
    this.version += 1;
    try {
      const page = await api(this.path, {
        query: { ...this.query, cursor: this.nextCursor, limit: this.pageSize },
      });
      const seen = new Set(this.items.map((item) => item.id ?? item.name));
      this.items = this.items.concat(page.items.filter((item) => !seen.has(item.id ?? item.name)));
      this.nextCursor = page.next_cursor;
      this.wanted = this.items.length;
    } finally {
      this.version += 1;
    }
  }
}
