/**
 * changeset-relay client: local SQLite replicas that capture each write
 * transaction as a session changeset, push it to the relay's log, pull
 * everyone's entries and replay them in log order.
 */
export { openReplica } from "./open.ts";
export { Replica } from "./replica.ts";
export type { ReplicaOptions, ReplicaStatus, ReplicaEvents, ReplicaWarning, ChangeEvent, SyncEvent, SyncProgress, Tx, DroppedEvent } from "./types.ts";
export type { WatchOptions } from "./watch.ts";
export type { ConflictInfo, ConflictKind, ConflictOptions, ConflictRecord, Resolution, TablePolicy } from "./conflicts.ts";
export type { Snapshot } from "./snapshot.ts";
export type { DivergenceEvent } from "./types.ts";
export type { DriverKind, Params, Row } from "./drivers/types.ts";
export type { Transport } from "./transport/http.ts";
export { httpTransport } from "./transport/http.ts";
export { RelayError, isRelayError } from "./errors.ts";
export type { ErrorCode } from "./errors.ts";
