// Tokens: from the URL fragment (#token=..., as `vybe dev` prints), else sessionStorage,
// else the sign-in form. The fragment is removed from the address bar at once.

export function takeToken(storageKey) {
  const hash = location.hash.replace(/^#/, "");
  const params = new URLSearchParams(hash);
  const fromUrl = params.get("token");
  if (fromUrl !== null) {
    params.delete("token");
    const rest = params.toString();
    history.replaceState(history.state, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
    if (fromUrl.trim()) sessionStorage.setItem(storageKey, fromUrl.trim());
  }
  return sessionStorage.getItem(storageKey);
}

export function storeToken(storageKey, token) {
  sessionStorage.setItem(storageKey, token);
}

export function forgetToken(storageKey) {
  sessionStorage.removeItem(storageKey);
}

/** The token's claims, unverified (display only: the server verifies). Null when unreadable. */
export function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = atob(part + "=".repeat((4 - (part.length % 4)) % 4));
    const bytes = Uint8Array.from(json, (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

/**
 * Wire the shared sign-in form and session bar. `start(token)` runs once a token is
 * known; returns helpers to show the form again (with a reason) and to sign out.
 */
export function setupSession(storageKey, start) {
  const signin = document.getElementById("signin");
  const form = document.getElementById("signin-form");
  const input = document.getElementById("token-input");
  const why = document.getElementById("signin-why");
  const whyDefault = why.innerHTML;
  const app = document.getElementById("app");
  const session = document.getElementById("session");

  function showSignIn(reason) {
    app.hidden = true;
    session.hidden = true;
    signin.hidden = false;
    if (reason) why.textContent = reason;
    else why.innerHTML = whyDefault;
    input.focus();
  }

  function begin(token) {
    const claims = claimsOf(token);
    if (!claims || !claims.sub) {
      forgetToken(storageKey);
      showSignIn("That does not look like an access token (a JWT with three dot-separated parts).");
      return;
    }
    storeToken(storageKey, token);
    signin.hidden = true;
    session.hidden = false;
    app.hidden = false;
    document.getElementById("who").textContent =
      `${claims.name || claims.sub} · ${(claims.role || "MEMBER").toLowerCase()}`;
    started = true;
    start(token, claims);
  }

  let started = false;
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    input.value = "";
    if (started && claimsOf(token)?.sub) {
      storeToken(storageKey, token);  // signed out mid-session: start clean with the new token
      location.reload();
      return;
    }
    begin(token);
  });

  document.getElementById("sign-out").addEventListener("click", () => {
    forgetToken(storageKey);
    location.reload();
  });

  const token = takeToken(storageKey);
  // After the caller holds the returned helpers (start() may use them at once).
  queueMicrotask(() => (token ? begin(token) : showSignIn()));

  return {
    showSignIn(reason) {
      forgetToken(storageKey);
      showSignIn(reason);
    },
  };
}
