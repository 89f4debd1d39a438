// Hash routing: #/path/segments?query. Filters live in the query so a view can be bookmarked.

export function parseHash(hash = location.hash) {
  const raw = hash.replace(/^#/, '');
  const [path, qs = ''] = raw.split('?', 2);
  const segments = path.split('/').filter(Boolean).map((part) => {
    try {
      return decodeURIComponent(part);
    } catch {
      return part;
    }
  });
  return { path, segments, query: new URLSearchParams(qs) };
}

/** Build "#/jobs?state=failed" from a path and a query object (empty values are dropped). */
export function href(path, query = {}) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== null && value !== undefined && value !== '') params.set(key, value);
  }
  const qs = params.toString();
  return `#${path}${qs ? `?${qs}` : ''}`;
}

export function navigate(path, query = {}) {
  const target = href(path, query);
  if (location.hash !== target) location.hash = target;
}

/** Links to the detail pages, ids escaped for the URL. */
export const jobHref = (id) => `#/jobs/${encodeURIComponent(id)}`;
export const runHref = (id) => `#/runs/${encodeURIComponent(id)}`;
