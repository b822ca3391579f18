// keygate token management page. Plain JavaScript, no build step, no dependencies.
//
// Rules this file keeps:
// - the email and password live in the `session` variable below and nowhere else (no
//   localStorage, sessionStorage, cookie or HTTP authentication cache); with host sign-in
//   there is no password, and requests carry the application's cookies (same origin);
// - everything from the API goes into the page through textContent or element properties,
//   never as HTML (the Content-Security-Policy requires Trusted Types, so HTML sinks throw);
// - a new token is shown once and wiped when the user dismisses it.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  const apiBase = document.body.dataset.apiBase || "";
  // "host": the application's own session signs the requests in (its cookie, same origin
  // only); there is no password form.
  const hostSignIn = document.body.dataset.signIn === "host";
  let roles = [];
  try {
    const parsed = JSON.parse(document.body.dataset.roles || "[]");
    if (Array.isArray(parsed)) roles = parsed.filter((r) => typeof r === "string");
  } catch (_) {
    roles = [];
  }

  // { email, authorization } while signed in; null otherwise. Memory of this tab only.
  let session = null;
  let busy = false;

  // ---- status messages (aria-live region) ----

  function say(message, kind) {
    const status = $("status");
    status.textContent = message;
    status.className = "status" + (kind ? " " + kind : "");
  }

  // ---- API ----

  function basicAuthorization(email, password) {
    const bytes = new TextEncoder().encode(email + ":" + password);
    let binary = "";
    for (const b of bytes) binary += String.fromCharCode(b);
    return "Basic " + btoa(binary);
  }

  class ApiError extends Error {
    constructor(message, status, code) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body, authorization) {
    const headers = { Accept: "application/json" };
    const auth = authorization || (session && session.authorization);
    if (auth) headers.Authorization = auth;
    const init = {
      method,
      headers,
      credentials: "omit",
      cache: "no-store",
      redirect: "error",
      referrerPolicy: "no-referrer",
    };
    // With host sign-in, the application's session cookie (same origin only) signs the
    // request in; otherwise no cookie or cached credential is ever sent.
    if (hostSignIn) init.credentials = "same-origin";
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(apiBase + path, init);
    } catch (_) {
      throw new ApiError("Could not reach the server. Check your connection and try again.", 0, "network");
    }
    if (res.status === 204) return null;
    let data = null;
    const type = res.headers.get("Content-Type") || "";
    if (type.includes("json")) {
      try {
        data = await res.json();
      } catch (_) {
        data = null;
      }
    }
    if (!res.ok) {
      const message =
        data && typeof data.error === "string" && data.error
          ? data.error
          : "The server answered " + res.status + (res.statusText ? " " + res.statusText : "") + ".";
      throw new ApiError(message, res.status, data && data.code);
    }
    return data;
  }

  // ---- formatting ----

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function timeCell(value, never) {
    const td = el("td");
    if (!value) {
      td.append(el("span", never, "muted"));
      return td;
    }
    const t = el("time");
    t.dateTime = value;
    t.title = value;
    const d = new Date(value);
    t.textContent = isNaN(d.getTime())
      ? value
      : d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
    td.append(t);
    return td;
  }

  // The metadata as compact JSON, or "" when there is none.
  function metadataText(m) {
    if (!m || typeof m !== "object" || Array.isArray(m) || Object.keys(m).length === 0) return "";
    return JSON.stringify(m);
  }

  // ---- views ----

  function showSignedIn(signedIn) {
    $("sign-in").hidden = signedIn || hostSignIn;
    $("host-signed-out").hidden = signedIn || !hostSignIn;
    $("account").hidden = !signedIn || hostSignIn;
    $("create").hidden = !signedIn;
    $("list").hidden = !signedIn;
    $("account-email").textContent = signedIn ? session.email : "";
    if (!signedIn) hideNewToken();
  }

  function renderTokens(tokens) {
    const body = $("tokens");
    body.replaceChildren();
    $("empty").hidden = tokens.length > 0;
    $("tokens-table").hidden = tokens.length === 0;
    for (const t of tokens) {
      const tr = el("tr");
      tr.dataset.tokenId = t.id;
      tr.dataset.tokenName = t.name;

      const name = el("th");
      name.scope = "row";
      name.append(el("span", t.name, "name"));
      if (t.description) name.append(el("span", t.description, "description"));
      const metadata = metadataText(t.metadata);
      if (metadata) name.append(el("code", metadata, "metadata"));
      tr.append(name);

      const perms = el("td");
      if (t.role) perms.append(el("span", t.role, "role"));
      const list = Array.isArray(t.permissions) ? t.permissions.join(", ") : "";
      perms.append(el("span", list || "none", "permissions"));
      tr.append(perms);

      const hint = el("td");
      hint.append(el("code", t.hint + "…"));
      tr.append(hint);

      const status = el("td");
      status.append(el("span", t.status, "badge " + t.status));
      tr.append(status);

      tr.append(el("td", t.created_by || "—", "created-by"));

      tr.append(timeCell(t.created_at, "—"));
      tr.append(timeCell(t.expires_at, "never"));
      const used = timeCell(t.last_used_at, "never");
      const client = [t.last_used_ip, t.last_used_user_agent].filter(Boolean).join(" · ");
      if (client) used.append(el("span", client, "client"));
      tr.append(used);

      const actions = el("td", null, "actions");
      if (t.status === "active") {
        const edit = el("button", "Edit", "secondary");
        edit.type = "button";
        edit.dataset.action = "edit";
        edit.setAttribute("aria-label", "Edit token " + t.name);
        edit.addEventListener("click", () => openEdit(t, edit));
        actions.append(edit);
      }
      if (t.status === "active") {
        const rotate = el("button", "Rotate", "secondary");
        rotate.type = "button";
        rotate.dataset.action = "rotate";
        rotate.setAttribute("aria-label", "Rotate token " + t.name);
        rotate.addEventListener("click", () => confirmRotate(t, rotate));
        actions.append(rotate);
      }
      const revoke = el("button", "Revoke", "danger");
      revoke.type = "button";
      revoke.dataset.action = "revoke";
      revoke.setAttribute("aria-label", "Revoke token " + t.name);
      revoke.addEventListener("click", () => confirmRevoke(t, revoke));
      actions.append(revoke);
      tr.append(actions);

      body.append(tr);
    }
  }

  function showNewToken(view) {
    $("new-token-name").textContent = view.name;
    $("new-token-value").value = view.token;
    $("new-token").hidden = false;
    $("new-token").focus();
  }

  function hideNewToken() {
    $("new-token-value").value = "";
    $("new-token-name").textContent = "";
    $("new-token").hidden = true;
  }

  function setupRoleField() {
    const select = $("role");
    if (roles.length === 0) {
      const input = el("input");
      input.id = "role";
      input.name = "role";
      input.type = "text";
      input.autocomplete = "off";
      input.placeholder = "Your account's permissions";
      input.setAttribute("aria-describedby", "role-hint");
      select.replaceWith(input);
      $("role-hint").textContent = "A role name defined on the server; empty gives the token your account's permissions.";
      return;
    }
    for (const r of roles) {
      const option = el("option", r);
      option.value = r;
      select.append(option);
    }
  }

  // ---- actions ----

  async function run(work) {
    if (busy) return;
    busy = true;
    document.body.setAttribute("aria-busy", "true");
    try {
      await work();
    } catch (e) {
      const message = e instanceof ApiError ? e.message : "Something went wrong: " + e;
      if (e instanceof ApiError && e.status === 401 && session) {
        signOut();
        say("Signed out: " + message, "error");
      } else {
        say(message, "error");
      }
    } finally {
      busy = false;
      document.body.removeAttribute("aria-busy");
    }
  }

  async function refresh() {
    const tokens = await api("GET", "/tokens");
    renderTokens(Array.isArray(tokens) ? tokens : []);
    return tokens;
  }

  function signOut() {
    session = null;
    renderTokens([]);
    showSignedIn(false);
    $("password").value = "";
    if (!hostSignIn) $("email").focus();
  }

  // With host sign-in: the application's session decides; ask the API who may list.
  function hostStart() {
    run(async () => {
      let tokens;
      try {
        tokens = await api("GET", "/tokens");
      } catch (e) {
        if (e instanceof ApiError && e.status === 401) {
          say("Sign in to the application first.", "error");
          return;
        }
        throw e;
      }
      session = { email: "" };
      showSignedIn(true);
      renderTokens(Array.isArray(tokens) ? tokens : []);
    });
  }

  function onSignIn(event) {
    event.preventDefault();
    const email = $("email").value.trim();
    const password = $("password").value;
    if (!email || !password) {
      say("Enter your email and password.", "error");
      return;
    }
    run(async () => {
      say("Signing in…");
      const authorization = basicAuthorization(email, password);
      const tokens = await api("GET", "/tokens", undefined, authorization);
      session = { email, authorization };
      $("password").value = "";
      showSignedIn(true);
      renderTokens(Array.isArray(tokens) ? tokens : []);
      say("Signed in as " + email + ".", "ok");
      $("name").focus();
    });
  }

  function onCreate(event) {
    event.preventDefault();
    const body = {};
    const name = $("name").value.trim();
    const description = $("description").value.trim();
    const role = $("role").value.trim();
    const expires = $("expires").value;
    const metadata = $("metadata").value.trim();
    if (metadata) {
      try {
        body.metadata = JSON.parse(metadata);
      } catch (_) {
        say("Metadata must be a JSON object, such as {\"team\": \"payments\"}.", "error");
        $("metadata").focus();
        return;
      }
    }
    if (name) body.name = name;
    if (description) body.description = description;
    if (role) body.role = role;
    if (expires) body.expires_in = Number(expires);
    run(async () => {
      say("Creating the token…");
      const view = await api("POST", "/tokens", body);
      $("create-form").reset();
      showNewToken(view);
      say("Token " + view.name + " created. Copy it now: you won't see it again.", "ok");
      await refresh();
    });
  }

  async function onCopy() {
    const input = $("new-token-value");
    if (!input.value) return;
    try {
      await navigator.clipboard.writeText(input.value);
      say("Token copied to the clipboard.", "ok");
    } catch (_) {
      input.focus();
      input.select();
      say("Could not copy automatically: the token is selected, press Ctrl+C (or ⌘C) to copy it.", "error");
    }
  }

  function onDone() {
    hideNewToken();
    say("The token is hidden and gone from this page.");
    $("name").focus();
  }

  // One modal dialog for both confirmations. `onConfirm` runs when the user confirms.
  let pending = null;

  function ask({ title, text, action, grace, onConfirm, returnFocus }) {
    const dialog = $("confirm");
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = text;
    $("confirm-ok").textContent = action;
    $("grace-field").hidden = !grace;
    $("grace").value = "0";
    pending = { onConfirm, returnFocus };
    dialog.showModal();
    (grace ? $("grace") : $("confirm-cancel")).focus();
  }

  function closeDialog() {
    const dialog = $("confirm");
    if (dialog.open) dialog.close();
  }

  function onDialogClose() {
    const p = pending;
    pending = null;
    if (p && p.returnFocus && p.returnFocus.isConnected) p.returnFocus.focus();
  }

  function onConfirmSubmit(event) {
    event.preventDefault();
    const p = pending;
    if (!p) return closeDialog();
    let grace = 0;
    if (!$("grace-field").hidden) {
      const raw = $("grace").value.trim();
      grace = raw === "" ? 0 : Number(raw);
      if (!Number.isInteger(grace) || grace < 0) {
        say("The grace period must be a whole number of seconds, 0 or more.", "error");
        $("grace").focus();
        return;
      }
    }
    closeDialog();
    p.onConfirm(grace);
  }

  function confirmRevoke(t, button) {
    ask({
      title: "Revoke token " + t.name + "?",
      text:
        "Requests with this token (" + t.hint + "…) are refused from now on. This cannot be undone.",
      action: "Revoke",
      grace: false,
      returnFocus: button,
      onConfirm: () =>
        run(async () => {
          say("Revoking " + t.name + "…");
          await api("DELETE", "/tokens/" + encodeURIComponent(t.id));
          await refresh();
          say("Token " + t.name + " revoked.", "ok");
          $("refresh").focus();
        }),
    });
  }

  function confirmRotate(t, button) {
    ask({
      title: "Rotate token " + t.name + "?",
      text:
        "You get a new token with the same name and permissions. The old one (" +
        t.hint +
        "…) stops working after the grace period.",
      action: "Rotate",
      grace: true,
      returnFocus: button,
      onConfirm: (grace) =>
        run(async () => {
          say("Rotating " + t.name + "…");
          const body = grace > 0 ? { grace_seconds: grace } : {};
          const view = await api("POST", "/tokens/" + encodeURIComponent(t.id) + "/rotate", body);
          showNewToken(view);
          say(
            "Token " + view.name + " rotated. Copy the new one now: you won't see it again.",
            "ok",
          );
          await refresh();
        }),
    });
  }

  // ---- editing (PATCH /tokens/{id}) ----

  let editing = null;

  function openEdit(t, button) {
    editing = { token: t, returnFocus: button };
    $("edit-title").textContent = "Edit token " + t.name;
    $("edit-name").value = t.name;
    $("edit-description").value = t.description || "";
    $("edit-expires").value = "keep";
    $("edit-metadata").value = metadataText(t.metadata);
    $("edit").showModal();
    $("edit-name").focus();
  }

  function closeEdit() {
    const dialog = $("edit");
    if (dialog.open) dialog.close();
  }

  function onEditClose() {
    const e = editing;
    editing = null;
    if (e && e.returnFocus && e.returnFocus.isConnected) e.returnFocus.focus();
  }

  function onEditSubmit(event) {
    event.preventDefault();
    if (!editing) return closeEdit();
    const t = editing.token;
    const body = {};
    const name = $("edit-name").value.trim();
    if (name !== t.name) body.name = name;
    const description = $("edit-description").value.trim();
    if (description !== (t.description || "")) body.description = description || null;
    const expires = $("edit-expires").value;
    if (expires === "never") body.expires_at = null;
    else if (expires !== "keep") body.expires_in = Number(expires);
    const raw = $("edit-metadata").value.trim();
    if (raw !== metadataText(t.metadata)) {
      let parsed = {};
      if (raw !== "") {
        try {
          parsed = JSON.parse(raw);
        } catch (_) {
          parsed = undefined;
        }
      }
      if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
        say("Metadata must be a JSON object, e.g. {\"team\": \"payments\"}.", "error");
        $("edit-metadata").focus();
        return;
      }
      body.metadata = parsed;
    }
    if (Object.keys(body).length === 0) {
      closeEdit();
      say("Nothing changed.");
      return;
    }
    closeEdit();
    run(async () => {
      say("Saving " + t.name + "…");
      const view = await api("PATCH", "/tokens/" + encodeURIComponent(t.id), body);
      await refresh();
      say("Token " + view.name + " saved.", "ok");
    });
  }

  // ---- wiring ----

  function start() {
    setupRoleField();
    $("sign-in-form").addEventListener("submit", onSignIn);
    $("sign-out").addEventListener("click", () => {
      signOut();
      say("Signed out.");
    });
    $("create-form").addEventListener("submit", onCreate);
    $("copy").addEventListener("click", onCopy);
    $("new-token-done").addEventListener("click", onDone);
    $("refresh").addEventListener("click", () =>
      run(async () => {
        await refresh();
        say("List refreshed.");
      }),
    );
    $("confirm-form").addEventListener("submit", onConfirmSubmit);
    $("confirm-cancel").addEventListener("click", () => {
      closeDialog();
      say("Nothing changed.");
    });
    $("confirm").addEventListener("close", onDialogClose);
    $("edit-form").addEventListener("submit", onEditSubmit);
    $("edit-cancel").addEventListener("click", () => {
      closeEdit();
      say("Nothing changed.");
    });
    $("edit").addEventListener("close", onEditClose);
    showSignedIn(false);
    if (hostSignIn) hostStart();
    document.body.dataset.ready = "true";
  }

  start();
})();
