// The JSON values of LUKS2 metadata (Json, JsonObject, isObject) and InvalidMetadata, the error one header copy fails with.
// Imports nothing of luks2/: the parser (json-text.ts), the validators and metadata.ts all build on it.

export type Json = null | boolean | number | string | Json[] | JsonObject;
export interface JsonObject {
  [key: string]: Json;
}

/** Thrown while validating one header copy; becomes part of a CORRUPT_HEADER message. */
export class InvalidMetadata extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidMetadata';
  }
}

export function isObject(v: Json | undefined): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
