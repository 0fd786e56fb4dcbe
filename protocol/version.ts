/**
 * Protocol versions. v1: HTTP push/pull with msgpack bodies (see README).
 * The version is in every route's path; `GET /v1/health` reports the
 * package version and the range of protocol versions the relay speaks.
 */
export const PROTOCOL_VERSION = 1;
export const MIN_PROTOCOL_VERSION = 1;
export const PACKAGE_VERSION = "0.1.0";
export const MSGPACK = "application/msgpack";
