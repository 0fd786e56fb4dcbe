/**
 * The React part of the demo: the todo list (useQuery: it re-renders when a
 * commit, local or remote, changed the todos, and only then) and the sync
 * progress bar (useStatus). Plain createElement, so the demo needs no JSX step.
 */
import { createElement as h, useEffect, useRef, useState, type KeyboardEvent } from "react";
import type { BrowserReplica } from "../client/browser/index.ts";
import { useQuery, useStatus } from "../client/react.ts";

/** relay_id() keys; TEXT in a database an older demo created. */
type Todo = { id: number | string; title: string; done: number; created_at: number };

export interface TodoProps {
  replica: BrowserReplica;
  /** Runs a write, reporting its error. */
  act: (write: () => Promise<unknown>) => void;
  /** Called once the first rows are on screen. */
  onReady: () => void;
}

export function TodoList({ replica, act, onReady }: TodoProps) {
  const { rows, loading, error } = useQuery<Todo>(replica, "SELECT id, title, done, created_at FROM todo ORDER BY created_at, id");
  const [editing, setEditing] = useState<Todo["id"] | undefined>();
  useEffect(() => {
    if (!loading) onReady();
  }, [loading, onReady]);
  if (error) throw error;
  const items = rows.map((t) =>
    h(
      "li",
      { key: t.id, "data-id": String(t.id), "data-testid": "todo", className: t.done === 1 ? "done" : undefined },
      h("input", {
        type: "checkbox",
        checked: t.done === 1,
        "aria-label": "done",
        "data-testid": "toggle",
        onChange: (e) => act(() => replica.exec("UPDATE todo SET done = ? WHERE id = ?", [e.currentTarget.checked ? 1 : 0, t.id])),
      }),
      editing === t.id
        ? h(Editor, { todo: t, done: (title) => (setEditing(undefined), title !== undefined && act(() => replica.exec("UPDATE todo SET title = ? WHERE id = ?", [title, t.id]))) })
        : h("span", { className: "title", title: "double-click to edit", "data-testid": "title", onDoubleClick: () => setEditing(t.id) }, t.title),
      h("button", { type: "button", className: "icon", title: "delete", "data-testid": "delete", onClick: () => act(() => replica.exec("DELETE FROM todo WHERE id = ?", [t.id])) }, "×"),
    ),
  );
  return [
    h("ul", { key: "list", id: "todos", className: "todos", "data-testid": "todos" }, items),
    h("p", { key: "empty", id: "empty", className: "empty", hidden: loading || rows.length > 0 }, "Nothing to do. Add a todo, then open this page in another browser."),
  ];
}

/** The title being edited: Enter or leaving saves, Escape cancels (`done(undefined)`). */
function Editor({ todo, done }: { todo: Todo; done: (title: string | undefined) => void }) {
  const finished = useRef(false);
  const finish = (value: string | undefined) => {
    if (finished.current) return;
    finished.current = true;
    const title = value?.trim();
    done(title && title !== todo.title ? title : undefined);
  };
  return h("input", {
    className: "edit",
    defaultValue: todo.title,
    "data-testid": "edit",
    maxLength: 200,
    autoFocus: true,
    onKeyDown: (e: KeyboardEvent<HTMLInputElement>) => {
      if (e.key === "Enter") finish(e.currentTarget.value);
      if (e.key === "Escape") finish(undefined);
    },
    onBlur: (e) => finish(e.currentTarget.value),
  });
}

/** A bar while a sync pulls more than one page (a first sync of a large log). */
export function SyncProgress({ replica }: { replica: BrowserReplica }) {
  const { progress } = useStatus(replica);
  if (!progress) return null;
  const label = `syncing ${progress.entries} / ${progress.entriesExpected} log entries (${(progress.bytes / 1024).toFixed(0)} KiB)`;
  return h("progress", { className: "sync-progress", "data-testid": "progress", max: progress.entriesExpected, value: progress.entries, title: label }, label);
}
