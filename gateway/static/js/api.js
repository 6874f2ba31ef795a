// REST calls with the bearer token; errors come back as {code, message}.

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message || code);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;  // seconds, where waiting helps (`unavailable`: PostgreSQL or Redis is down)
  }
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
