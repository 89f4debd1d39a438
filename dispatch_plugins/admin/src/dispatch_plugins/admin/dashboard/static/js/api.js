// The admin API client: bearer token from session storage, JSON in and out, errors as ApiError.

// The API lives at <mount>/v1/ and this file at <mount>/static/js/api.js, so the base is found
// relative to this module: the dashboard works under any mount prefix.
const BASE = new URL('../../v1/', import.meta.url);
const TOKEN_KEY = 'dispatch.token';

export class ApiError extends Error {
  constructor(status, code, message, details = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

let unauthorizedHandler = () => {};

/** Called (once per failing request) when the API answers 401. */
export function onUnauthorized(handler) {
  unauthorizedHandler = handler;
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** Encode one path segment (an id or a name). */
export const seg = (value) => encodeURIComponent(String(value));

/**
 * Call the API. `path` is relative to /v1 ("jobs", `jobs/${seg(id)}/retry`); `query` values
 * that are empty are left out.
 */
export async function api(path, { method = 'GET', query = {}, body } = {}) {
  const url = new URL(path, BASE);
  for (const [key, value] of Object.entries(query)) {
    if (value !== null && value !== undefined && value !== '') url.searchParams.set(key, value);
  }
  const headers = { Accept: 'application/json' };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';

  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (err) {
    throw new ApiError(0, 'network', 'Cannot reach the Dispatch server.');
  }
  let data = null;
  const text = await response.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    const apiError = new ApiError(
      response.status,
      error.code || `http_${response.status}`,
      error.message || response.statusText || `HTTP ${response.status}`,
      error.details ?? null,
    );
    if (response.status === 401) unauthorizedHandler(apiError);
    throw apiError;
  }
  return data;
}

/** Is this error the API refusing a tenant token on an operator-only route? */
export const isOperatorOnly = (err) => err instanceof ApiError && err.code === 'operator_only';
