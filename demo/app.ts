/**
 * The demo: a shared todo list on a browser replica. The list and the sync
 * progress bar are React (todos.ts, with changeset-relay/react); the rest is plain DOM.
 * Built with esbuild by scripts/build-demo.ts into demo/dist, which the relay
 * serves as static assets (wrangler.toml [assets]).
 */
import { openReplica, type BrowserReplica, type BrowserStatus, type ConflictRecord } from "../client/browser/index.ts";
// esbuild's file loader copies the .wasm into the build and gives its URL:
// esbuild does not follow `new URL("sqlite3.wasm", import.meta.url)` by itself.
import wasmFile from "@sqlite.org/sqlite-wasm/sqlite3.wasm";
import { createElement } from "react";
import { createRoot } from "react-dom/client";
import { DEMO_SCHEMA } from "./schema.ts";
import { SyncProgress, TodoList } from "./todos.ts";

const params = new URLSearchParams(location.search);
const db = /^[A-Za-z0-9_-]{1,64}$/.test(params.get("db") ?? "") ? params.get("db")! : "demo";
const keys = { token: `changeset-relay-demo:${db}:token`, offline: `changeset-relay-demo:${db}:offline` };

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const els = {
  connection: $("connection"),
  pending: $("pending"),
  storage: $("storage"),
  online: $<HTMLInputElement>("online"),
  onlineLabel: $("online-label"),
  tokenPanel: $("token-panel"),
  tokenForm: $<HTMLFormElement>("token-form"),
  tokenInput: $<HTMLInputElement>("token-input"),
  tokenCommand: $("token-command"),
  app: $("app"),
  addForm: $<HTMLFormElement>("add-form"),
  newTitle: $<HTMLInputElement>("new-title"),
  todos: $("todo-root"),
  progress: $("progress-root"),
  conflicts: $<HTMLOListElement>("conflicts"),
  conflictCount: $("conflict-count"),
  error: $("error"),
  dbName: $("db-name"),
  clientId: $("client-id"),
  cursor: $("cursor"),
  tabRole: $("tab-role"),
  reset: $<HTMLButtonElement>("reset"),
};

let replica: BrowserReplica | undefined;

function showError(e: unknown): void {
  console.error(e);
  els.error.textContent = `${(e as Error)?.name === "RelayError" ? `${(e as { code: string }).code}: ` : ""}${(e as Error)?.message ?? e}`;
  els.error.hidden = false;
}

/** A development token from the relay (`npm start` enables it), else null. */
async function devToken(): Promise<string | null> {
  try {
    const res = await fetch(`/v1/dev/token?db=${encodeURIComponent(db)}`, { method: "POST" });
    if (!res.ok) return null;
    return ((await res.json()) as { token: string }).token;
  } catch {
    return null;
  }
}

function askForToken(): Promise<string> {
  els.tokenCommand.textContent = `npx changeset-relay token --db ${db} --role write --sub me-${Math.random().toString(36).slice(2, 8)} --ttl 1d`;
  els.tokenPanel.hidden = false;
  return new Promise((resolve) => {
    els.tokenForm.addEventListener("submit", function submit(e) {
      e.preventDefault();
      const t = els.tokenInput.value.trim();
      if (!t) return;
      els.tokenForm.removeEventListener("submit", submit);
      els.tokenPanel.hidden = true;
      resolve(t);
    });
  });
}

async function open(): Promise<BrowserReplica> {
  let token = localStorage.getItem(keys.token);
  const reused = token !== null;
  token ??= (await devToken()) ?? (await askForToken());
  const options = {
    url: location.origin,
    db,
    token,
    schema: DEMO_SCHEMA,
    live: localStorage.getItem(keys.offline) !== "1",
    worker: new URL("./worker.js", import.meta.url),
    wasmUrl: new URL(wasmFile, import.meta.url).href,
  };
  let r = await openReplica(options);
  if (r.status().storage === "memory" && reused && r.status().owner) {
    // A memory replica starts empty: reusing a client id that already wrote
    // to the log would restart its cseq at 1. Take a fresh identity.
    const fresh = await devToken();
    if (fresh) {
      await r.close();
      r = await openReplica({ ...options, token: fresh });
    }
  }
  // Only a persistent database may keep its identity across page loads.
  if (r.status().storage === "opfs") localStorage.setItem(keys.token, token);
  return r;
}

function renderStatus(s: BrowserStatus): void {
  const state = !s.live ? "offline" : s.connected ? "live" : "connecting";
  els.connection.dataset.state = state;
  els.connection.querySelector(".label")!.textContent = state;
  els.pending.textContent = `${s.pending} pending`;
  els.pending.dataset.count = String(s.pending);
  els.pending.classList.toggle("busy", s.pending > 0);
  els.storage.textContent = s.storage === "opfs" ? "OPFS · persistent" : "memory only";
  els.storage.dataset.storage = s.storage;
  els.online.checked = s.live;
  els.onlineLabel.textContent = s.live ? "online" : "offline";
  els.clientId.textContent = s.clientId;
  els.cursor.textContent = `${s.cursor} / ${s.head}`;
  els.tabRole.textContent = s.owner ? "this tab owns the database" : "another tab owns the database";
}

async function renderConflicts(): Promise<void> {
  const list = await replica!.conflicts();
  els.conflictCount.textContent = String(list.length);
  els.conflicts.replaceChildren(
    ...list
      .slice(-50)
      .reverse()
      .map((c: ConflictRecord) => {
        const li = document.createElement("li");
        const what = c.incoming.new?.title !== undefined ? `title → “${String(c.incoming.new.title)}”` : c.incoming.new?.done !== undefined ? `done → ${String(c.incoming.new.done)}` : c.op;
        li.innerHTML = `<span class="res"></span> <span class="what"></span> <span class="meta"></span>`;
        li.querySelector(".res")!.textContent = `${c.kind}: ${c.resolution}`;
        li.querySelector(".what")!.textContent = `${c.table} ${what}`;
        li.querySelector(".meta")!.textContent = c.seq > 0 ? `(log entry ${c.seq} by ${c.client})` : `(while rebasing this replica's pending write)`;
        return li;
      }),
  );
}

/** A write from the UI; the list re-renders through its watch. */
function act(fn: () => Promise<unknown>): void {
  fn().catch(showError);
}

async function main(): Promise<void> {
  els.dbName.textContent = db;
  replica = await open();
  const r = replica;
  Object.assign(globalThis, { demo: { replica: r, db } });
  renderStatus(r.status());
  els.app.hidden = false;
  r.on("status", renderStatus);
  r.on("conflict", () => void renderConflicts().catch(showError));
  r.on("error", (e) => console.warn("changeset-relay:", e.code, e.message));
  // Another tab took over the database: its data may be newer than what we drew (the list's watch starts over by itself).
  r.on("owner", () => void renderConflicts().catch(showError));
  els.addForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = els.newTitle.value.trim();
    if (!text) return;
    els.newTitle.value = "";
    // relay_id() named here too: a database an older demo created has no DEFAULT for the key.
    act(() => r.exec("INSERT INTO todo(id, title, done, created_at) VALUES (relay_id(), ?, 0, ?)", [text, Date.now()]));
  });
  els.online.addEventListener("change", () => {
    const on = els.online.checked;
    localStorage.setItem(keys.offline, on ? "0" : "1");
    r.setLive(on).catch(showError);
  });
  els.reset.addEventListener("click", () => void reset());
  await renderConflicts();
  createRoot(els.progress).render(createElement(SyncProgress, { replica: r }));
  await new Promise<void>((onReady) => createRoot(els.todos).render(createElement(TodoList, { replica: r, act, onReady })));
  document.body.dataset.ready = "1";
}

async function reset(): Promise<void> {
  // Online, push what can be pushed first, so the warning names only what would really be lost.
  if (replica && els.online.checked) await replica.sync().catch(() => undefined);
  const pending = replica?.status().pending ?? 0;
  const loss = pending > 0 ? `${pending} edit${pending === 1 ? "" : "s"} not yet synced will be lost.` : "Every edit here is synced.";
  if (!confirm(`Forget this browser's token and delete its copy of the database? ${loss}`)) return;
  await replica?.close();
  localStorage.removeItem(keys.token);
  localStorage.removeItem(keys.offline);
  try {
    const pools = await (await navigator.storage.getDirectory()).getDirectoryHandle(".changeset-relay");
    await pools.removeEntry(`${db}.sqlite3`, { recursive: true });
  } catch (e) {
    console.warn("could not delete the local database (still open in another tab?)", e);
  }
  location.reload();
}

main().catch(showError);
