// What running a relay needs, shared by the CLI and the repository's `npm start`:
// the Worker configuration handed to wrangler, and the development secret.
import { randomBytes } from "node:crypto";
import { appendFileSync, existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/**
 * The relay alone, as the repository's wrangler.toml declares it minus the
 * demo (its [build] and [assets] need the repository): test/package.test.ts
 * checks the two agree.
 * @param {string} name the Worker's name
 */
export function relayConfig(name) {
  return {
    name,
    main: fileURLToPath(new URL("../worker/index.ts", import.meta.url)),
    compatibility_date: "2026-04-01",
    compatibility_flags: ["nodejs_compat"],
    durable_objects: { bindings: [{ name: "LOG", class_name: "ChangesetLog" }] },
    migrations: [{ tag: "v1", new_sqlite_classes: ["ChangesetLog"] }],
  };
}

/**
 * RELAY_SECRET from ./.dev.vars, the file wrangler reads local secrets from.
 * With `create`, a random development secret is appended when there is none.
 * @param {boolean} [create]
 * @returns {string | undefined}
 */
export function devVarsSecret(create = false) {
  const text = existsSync(".dev.vars") ? readFileSync(".dev.vars", "utf8") : "";
  const found = /^RELAY_SECRET=(.*)$/m.exec(text)?.[1]?.trim().replace(/^"(.*)"$/, "$1");
  if (found || !create) return found;
  const created = `dev-${randomBytes(24).toString("hex")}`;
  appendFileSync(".dev.vars", `${text && !text.endsWith("\n") ? "\n" : ""}RELAY_SECRET=${created}\n`, { mode: 0o600 });
  console.log("created .dev.vars with a development RELAY_SECRET (keep it out of git); mint tokens with: npx changeset-relay token --db NAME --role write --sub ID");
  return created;
}
