/**
 * The wire, shared by relay and client: message shapes and their validators
 * (HTTP and socket), codec, errors, limits, tokens, compression negotiation,
 * the changeset reader, and the protocol version with its changelog.
 */
export * from "./errors.ts";
export { isName } from "./validate.ts";
export * from "./messages.ts";
export * from "./frames.ts";
export * from "./codec.ts";
export * from "./compression.ts";
export * from "./limits.ts";
export * from "./version.ts";
export {
  changesetTables,
  decodeChangeset,
  primaryKey,
  validateChangeset,
  type Change,
  type ChangeOp,
  type Changeset,
  type SqlValue,
  type TableHeader,
} from "./changeset.ts";
export * from "./token.ts";
