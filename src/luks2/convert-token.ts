// The header side of an in-place conversion: the plan kept in the `atrest-convert` token (parsed and checked back), and the mandatory requirement that makes other readers refuse the header meanwhile.
//
// Token JSON (in the header's `tokens`, no keyslots): { "type": "atrest-convert", "keyslots": [],
// "atrest_plan": { mode, resilience, size, sectorSize, sourceOffset, targetOffset, sourceIvTweak, batch,
// area: { offset, size }, sidecar, imageIno?, oldKey?, oldAreas?: [{ offset, size }] } } (fields as in
// ConvertPlan). The progress record area the plan points at is described in convert-record.ts.
import { SECTOR_SIZES } from '../crypto/xts.js';
import { AtrestError } from '../errors/index.js';
import { RECORD_BYTES, SUM_BYTES, SUMS_SLOT_BYTES } from './convert-record.js';
import type { JsonObject } from './json-value.js';
import { CONVERT_REQUIREMENT, type Luks2Metadata } from './volume.js';

export const CONVERT_TOKEN = 'atrest-convert';

export type ConvertMode = 'encrypt' | 'reencrypt';
export type Resilience = 'datashift' | 'checksum';

/** The plan, kept in the `atrest-convert` token while the conversion runs. */
export interface ConvertPlan {
  mode: ConvertMode;
  resilience: Resilience;
  /** Bytes of plaintext. */
  size: number;
  sectorSize: number;
  sourceOffset: number;
  targetOffset: number;
  /** iv_tweak of the source layout (reencrypt of a volume with a non-zero tweak). */
  sourceIvTweak: number;
  batch: number;
  /** Record area in the header file (convert-record.ts). */
  area: { offset: number; size: number };
  /** The header is a sidecar file until the end (attached encrypt). */
  sidecar: boolean;
  /** Sidecar: the inode number of the image it belongs to (see volume/convert/sidecar.ts checkSidecarIdentity). */
  imageIno?: number;
  /** reencrypt: the old volume key, wrapped under the new one (see volume/convert/old-key.ts). */
  oldKey?: string;
  /** reencrypt: keyslot areas of the old key, wiped again at the end. */
  oldAreas?: Array<{ offset: number; size: number }>;
}

function num(v: unknown, what: string, path: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new AtrestError('CORRUPT_HEADER', `${path}: conversion plan field ${what} is invalid`, { path });
  }
  return v;
}

/** The plan of a converting header (CORRUPT_HEADER when its token is missing or malformed). */
export function planOf(meta: Luks2Metadata): ConvertPlan {
  const path = meta.headerPath;
  const t = meta.tokens.find((x) => x.type === CONVERT_TOKEN);
  const p = t?.raw.atrest_plan;
  if (typeof p !== 'object' || p === null || Array.isArray(p)) {
    throw new AtrestError('CORRUPT_HEADER', `${path}: conversion under way but its plan token is missing`, {
      path,
      hint: 'restore the header from a backup',
    });
  }
  const o = p;
  const area = o.area as JsonObject | undefined;
  const mode = o.mode === 'encrypt' || o.mode === 'reencrypt' ? o.mode : null;
  const resilience = o.resilience === 'datashift' || o.resilience === 'checksum' ? o.resilience : null;
  if (mode === null || resilience === null || typeof area !== 'object' || area === null) {
    throw new AtrestError('CORRUPT_HEADER', `${path}: conversion plan is malformed`, { path });
  }
  const plan: ConvertPlan = {
    mode,
    resilience,
    size: num(o.size, 'size', path),
    sectorSize: num(o.sectorSize, 'sectorSize', path),
    sourceOffset: num(o.sourceOffset, 'sourceOffset', path),
    targetOffset: num(o.targetOffset, 'targetOffset', path),
    sourceIvTweak: num(o.sourceIvTweak ?? 0, 'sourceIvTweak', path),
    batch: num(o.batch, 'batch', path),
    area: { offset: num(area.offset, 'area.offset', path), size: num(area.size, 'area.size', path) },
    sidecar: o.sidecar === true,
  };
  if (o.imageIno !== undefined) plan.imageIno = num(o.imageIno, 'imageIno', path);
  if (typeof o.oldKey === 'string') plan.oldKey = o.oldKey;
  if (Array.isArray(o.oldAreas)) {
    plan.oldAreas = o.oldAreas.map((a) => {
      const x = a as JsonObject;
      return { offset: num(x.offset, 'oldAreas.offset', path), size: num(x.size, 'oldAreas.size', path) };
    });
  }
  const ss = plan.sectorSize;
  const sane =
    SECTOR_SIZES.includes(ss) &&
    plan.size % ss === 0 &&
    plan.batch % ss === 0 &&
    plan.batch > 0 &&
    plan.area.size >= 2 * RECORD_BYTES + 2 * SUMS_SLOT_BYTES &&
    (plan.batch / ss) * SUM_BYTES <= SUMS_SLOT_BYTES &&
    (plan.resilience === 'checksum'
      ? plan.sourceOffset === plan.targetOffset
      : plan.targetOffset - plan.sourceOffset >= plan.batch);
  if (!sane) throw new AtrestError('CORRUPT_HEADER', `${path}: conversion plan is inconsistent`, { path });
  return plan;
}

/** The token JSON that carries a plan. */
export function planToken(plan: ConvertPlan): JsonObject {
  const p: JsonObject = {
    mode: plan.mode,
    resilience: plan.resilience,
    size: plan.size,
    sectorSize: plan.sectorSize,
    sourceOffset: plan.sourceOffset,
    targetOffset: plan.targetOffset,
    sourceIvTweak: plan.sourceIvTweak,
    batch: plan.batch,
    area: { offset: plan.area.offset, size: plan.area.size },
    sidecar: plan.sidecar,
  };
  if (plan.imageIno !== undefined) p.imageIno = plan.imageIno;
  if (plan.oldKey !== undefined) p.oldKey = plan.oldKey;
  if (plan.oldAreas !== undefined)
    p.oldAreas = plan.oldAreas.map((a) => ({ offset: a.offset, size: a.size }));
  return { type: CONVERT_TOKEN, keyslots: [], atrest_plan: p };
}

/** Adds the conversion requirement and plan token to a JSON metadata object. */
export function markConverting(json: JsonObject, plan: ConvertPlan): void {
  const config = json.config as JsonObject;
  const req = (config.requirements as JsonObject | undefined) ?? {};
  const mandatory = Array.isArray(req.mandatory) ? (req.mandatory as string[]) : [];
  if (!mandatory.includes(CONVERT_REQUIREMENT)) mandatory.push(CONVERT_REQUIREMENT);
  config.requirements = { ...req, mandatory };
  const tokens = json.tokens as JsonObject;
  let id = 0;
  while (String(id) in tokens) id++;
  tokens[String(id)] = planToken(plan);
}

/** Removes the conversion requirement and plan token. */
export function unmarkConverting(json: JsonObject): void {
  const config = json.config as JsonObject;
  const req = config.requirements as JsonObject | undefined;
  if (req && Array.isArray(req.mandatory)) {
    const rest = (req.mandatory as string[]).filter((r) => r !== CONVERT_REQUIREMENT);
    if (rest.length === 0) delete req.mandatory;
    else req.mandatory = rest;
    if (Object.keys(req).length === 0) delete config.requirements;
  }
  const tokens = json.tokens as Record<string, JsonObject>;
  for (const [id, t] of Object.entries(tokens)) if (t.type === CONVERT_TOKEN) delete tokens[id];
}

/** Rebinds the plan in a converting header's JSON to the image inode `ino` (adopting a sidecar). */
export function setPlanImageIno(json: JsonObject, ino: number): void {
  const tokens = json.tokens as Record<string, JsonObject>;
  for (const t of Object.values(tokens)) {
    if (t.type === CONVERT_TOKEN) (t.atrest_plan as JsonObject).imageIno = ino;
  }
}
