// Parses the JSON text of a LUKS2 JSON area the way cryptsetup's json-c does where it matters: nesting limit, integer vs. floating-point literals.
import { InvalidMetadata, type Json, type JsonObject } from './json-value.js';

/** json-c's default tokener depth (32) admits at most 31 nested objects/arrays, the top object included. */
export const JSON_MAX_DEPTH = 31;

/** Members whose value was written as a floating-point literal (json-c: json_type_double, not an int). */
const floatMembers = new WeakMap<JsonObject, Set<string>>();

/** Whether `o[key]` was written as an integer literal in the parsed text (true for values made in code). */
export function isIntegerLiteral(o: JsonObject, key: string): boolean {
  const v = o[key];
  return typeof v === 'number' && Number.isInteger(v) && !(floatMembers.get(o)?.has(key) ?? false);
}

const WS = new Set([0x20, 0x09, 0x0a, 0x0d]);
const NUMBER = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;

/**
 * Parses `text` (one JSON value, whitespace around it allowed). Containers nested deeper than
 * JSON_MAX_DEPTH are refused like cryptsetup refuses them, before any deep recursion.
 */
export function parseJsonText(text: string): Json {
  let i = 0;
  const fail = (what: string): never => {
    throw new InvalidMetadata(`JSON does not parse: ${what} at position ${i}`);
  };
  const skip = (): void => {
    while (i < text.length && WS.has(text.charCodeAt(i))) i++;
  };
  const string = (): string => {
    const start = i;
    i++;
    for (;;) {
      if (i >= text.length) fail('unterminated string');
      const c = text.charCodeAt(i);
      if (c === 0x22) break;
      if (c === 0x5c) i++;
      else if (c < 0x20) fail('control character in string');
      i++;
    }
    i++;
    try {
      return JSON.parse(text.slice(start, i)) as string;
    } catch {
      return fail('bad string escape');
    }
  };
  const value = (depth: number, parent: JsonObject | null, key: string): Json => {
    skip();
    const c = text[i];
    if (c === '{' || c === '[') {
      if (depth + 1 > JSON_MAX_DEPTH) {
        throw new InvalidMetadata(`JSON nests deeper than ${JSON_MAX_DEPTH} levels (cryptsetup's limit)`);
      }
      i++;
      skip();
      if (c === '[') {
        const arr: Json[] = [];
        if (text[i] === ']') {
          i++;
          return arr;
        }
        for (;;) {
          arr.push(value(depth + 1, null, ''));
          skip();
          if (text[i] === ',') i++;
          else if (text[i] === ']') {
            i++;
            return arr;
          } else fail('expected , or ]');
        }
      }
      const obj: JsonObject = {};
      if (text[i] === '}') {
        i++;
        return obj;
      }
      for (;;) {
        skip();
        if (text[i] !== '"') fail('expected a member name');
        const name = string();
        skip();
        if (text[i] !== ':') fail('expected :');
        i++;
        const v = value(depth + 1, obj, name);
        Object.defineProperty(obj, name, { value: v, enumerable: true, writable: true, configurable: true });
        skip();
        if (text[i] === ',') i++;
        else if (text[i] === '}') {
          i++;
          return obj;
        } else fail('expected , or }');
      }
    }
    if (c === '"') return string();
    for (const [word, v] of [
      ['true', true],
      ['false', false],
      ['null', null],
    ] as const) {
      if (text.startsWith(word, i)) {
        i += word.length;
        return v;
      }
    }
    NUMBER.lastIndex = i;
    const m = NUMBER.exec(text);
    if (m === null) return fail('unexpected character');
    i += m[0].length;
    if ((m[1] !== undefined || m[2] !== undefined) && parent !== null) {
      const set = floatMembers.get(parent) ?? new Set<string>();
      set.add(key);
      floatMembers.set(parent, set);
    }
    return Number(m[0]);
  };
  const out = value(0, null, '');
  skip();
  if (i !== text.length) fail('unexpected data after the JSON value');
  return out;
}
