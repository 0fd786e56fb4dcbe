/**
 * A DOM for README examples that render with react-dom in Node (happy-dom),
 * preloaded with `node --import`. Registering it replaces globals Node already
 * has (fetch, WebSocket, URL, timers...) with the DOM window's, which obey a
 * page origin the example does not have: Node's own are put back.
 */
import { GlobalRegistrator } from "@happy-dom/global-registrator";

const g = globalThis as Record<string, unknown>;
const NODE_OWN = ["fetch", "Request", "Response", "Headers", "WebSocket", "AbortController", "AbortSignal", "URL", "URLSearchParams", "setTimeout", "clearTimeout", "setInterval", "clearInterval", "queueMicrotask", "TextEncoder", "TextDecoder", "performance", "crypto", "Blob", "FormData", "ReadableStream", "EventTarget", "Event"];
const kept = NODE_OWN.map((name) => [name, g[name]] as const);
GlobalRegistrator.register();
for (const [name, value] of kept) if (value !== undefined) Object.defineProperty(globalThis, name, { value, writable: true, configurable: true });
