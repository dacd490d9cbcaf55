// Calls to this server's HTTP API, with the bearer token the operator typed into the page.
// The token lives in sessionStorage: this tab only, gone when it closes.

const TOKEN_KEY = "inferno.console.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) ?? "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// path is relative to the page (/console): "v1/models" is /v1/models on this server.
export async function call(path, { method = "GET", body } = {}) {
  const headers = { accept: "application/json" };
  const bearer = token();
  if (bearer) headers.authorization = `Bearer ${bearer}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  let response;
  try {
    response = await fetch(new URL(path, document.baseURI), {
      method, headers, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (exc) {
    throw new ApiError(0, "unreachable", `The server did not answer: ${exc.message}`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data?.error;
    throw new ApiError(response.status, error?.code ?? "http_error",
                       error?.message ?? `HTTP ${response.status}`);
  }
  return data;
}

export const state = () => call("console/api/state");
export const model = (name) => call(`v1/models/${encodeURIComponent(name)}`);
export const predict = (name, inputs) =>
  call(`v1/models/${encodeURIComponent(name)}:predict`, { method: "POST", body: { inputs } });
// action: "load" | "unload" | "activate" (the admin routes, POST /v1/models:<action>).
export const admin = (action, name, version) =>
  call(`v1/models:${action}`, { method: "POST", body: { name, version } });
