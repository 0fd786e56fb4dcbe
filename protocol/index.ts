/** The wire: message shapes, codec, errors, limits, tokens. Shared by relay and client. */
export * from "./errors.ts";
export * from "./messages.ts";
export * from "./codec.ts";
export * from "./limits.ts";
export * from "./version.ts";
export * from "./changeset.ts";
export * from "./token.ts";
