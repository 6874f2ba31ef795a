// REST calls with the bearer token; errors come back as {code, message}.

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message || code);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;  // seconds, where waiting helps (`unavailable`: PostgreSQL or Redis is down)
  }
}

/** Every page of a list paged by `cursor` (the moderator and care queues), oldest first, `limit` a request, at
 *  most `maxPages`: `more` says others may wait (the last page was full, or a page did not go on: a gateway older
 *  than paging ignores `after`). `key` names the items' id. */
export async function allPages(rest, path, key, { limit = 500, maxPages = 20 } = {}) {
  const list = [];
  const seen = new Set();
  for (let page = 0; page < maxPages; page += 1) {
    const last = list[list.length - 1];
    const got = await rest.get(`${path}?limit=${limit}${last ? `&after=${encodeURIComponent(last.cursor)}` : ""}`);
    const fresh = got.filter((v) => !seen.has(v[key]));
    if (got.length && !fresh.length) return { list, more: true };
    for (const v of fresh) seen.add(v[key]);
    list.push(...fresh);
    if (got.length < limit) return { list, more: false };
  }
  return { list, more: true };
}

export function api(getToken) {
  async function call(method, path, body) {
    const headers = { Authorization: `Bearer ${getToken()}`, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let res;
    try {
      res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
                                cache: "no-store", credentials: "omit" });
    } catch (err) {
      throw new ApiError(0, "network", "the server cannot be reached", 2);
    }
    if (res.status === 204) return null;
    let data = null;
    try { data = await res.json(); } catch { /* empty or not JSON */ }
    if (!res.ok) {
      throw new ApiError(res.status, data?.code || `http_${res.status}`, data?.message || data?.detail || res.statusText,
                         typeof data?.retry_after === "number" ? data.retry_after : null);
    }
    return data;
  }
  return {
    get: (path) => call("GET", path),
    post: (path, body) => call("POST", path, body ?? {}),
    del: (path) => call("DELETE", path),
  };
}
