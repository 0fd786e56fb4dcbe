// Child process for the crash test: commits one write, says so, then waits to be killed (never pushes).
import { openReplica } from "../../client/index.ts";
import { TODO_SCHEMA } from "./replicas.ts";

const [url, db, token, path] = process.argv.slice(2) as [string, string, string, string];
const r = await openReplica({ url, db, token, path, schema: TODO_SCHEMA, driver: "node" });
await r.exec("INSERT INTO todo(id, title) VALUES ('crash', 'survives SIGKILL')");
process.stdout.write("committed\n");
setInterval(() => {}, 1000);
