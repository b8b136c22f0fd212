// The small part of @cocalc/fuse-native (the optional libfuse fallback, loaded lazily) atrest uses, typed; mounting goes around its directory-only open().
import { Buffer } from 'node:buffer';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { AtrestError } from '../errors/index.js';

/** Callback conventions of fuse-native: a negative errno, or 0 / a byte count, then results. */
export type StatCb = (err: number, stat?: NativeStat) => void;
export type CodeCb = (code: number) => void;
export type FdCb = (err: number, fd?: number) => void;

export interface NativeStat {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  ino: number;
  blksize: number;
  blocks: number;
  atime: Date;
  mtime: Date;
  ctime: Date;
}

export interface NativeStatfs {
  bsize: number;
  frsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  favail: number;
  fsid: number;
  flag: number;
  namemax: number;
}

/** The operations atrest implements (fuse-native calls ops[name] with these arguments). */
export interface NativeOps {
  init: (cb: CodeCb) => void;
  getattr: (path: string, cb: StatCb) => void;
  fgetattr: (path: string, fd: number, cb: StatCb) => void;
  open: (path: string, flags: number, cb: FdCb) => void;
  read: (path: string, fd: number, buf: Buffer, len: number, pos: number, cb: CodeCb) => void;
  write: (path: string, fd: number, buf: Buffer, len: number, pos: number, cb: CodeCb) => void;
  fsync: (path: string, datasync: number, fd: number, cb: CodeCb) => void;
  flush: (path: string, fd: number, cb: CodeCb) => void;
  release: (path: string, fd: number, cb: CodeCb) => void;
  truncate: (path: string, size: number, cb: CodeCb) => void;
  ftruncate: (path: string, fd: number, size: number, cb: CodeCb) => void;
  statfs: (path: string, cb: (err: number, st?: NativeStatfs) => void) => void;
}

/** The internals of a fuse-native Fuse object that our own mount path needs. */
interface FuseInternals {
  _thread: Buffer | null;
  _openCallback: ((err: Error | null) => void) | null;
  _handlers: unknown[];
  _malloc: (size: number) => Buffer;
  _getImplementedArray: () => Uint32Array;
}

interface FuseBinding {
  sizeof_fuse_thread_t: number;
  fuse_native_mount: (
    mnt: string,
    opts: string,
    thread: Buffer,
    ctx: object,
    malloc: (size: number) => Buffer,
    handlers: unknown[],
    implemented: Uint32Array,
  ) => void;
  fuse_native_unmount: (mnt: string, thread: Buffer) => void;
}

type FuseCtor = new (mnt: string, ops: NativeOps, opts: { timeout: false }) => FuseInternals;

interface FuseNative {
  FuseClass: FuseCtor;
  binding: FuseBinding;
}

const NOT_BUILT_HINT =
  'install libfuse2 and libfuse-dev (apt-get install libfuse2 libfuse-dev pkg-config make g++), then run scripts/setup again (or npm rebuild @cocalc/fuse-native); or use the default kernel backend (--fuse-backend kernel)';

let loaded: FuseNative | null = null;

/**
 * Loads the optional libfuse2 binding (@cocalc/fuse-native) on first use: only the libfuse fallback
 * backend needs it, and its build may have failed at set-up (npm skips a failed optional dependency).
 * A missing module, an unbuilt binding or a missing libfuse.so.2 is MISSING_TOOL saying which.
 */
export function loadFuseNative(): FuseNative {
  loaded ??= loadFuseNativeWith(createRequire(import.meta.url));
  return loaded;
}

/** loadFuseNative through `req` (tests inject one), not cached. */
export function loadFuseNativeWith(req: NodeJS.Require): FuseNative {
  try {
    const FuseClass = req('@cocalc/fuse-native') as FuseCtor;
    // The same .node file index.js loaded (require caches it), so op numbers and handlers agree.
    const pkgDir = dirname(req.resolve('@cocalc/fuse-native/package.json'));
    const binding = (
      createRequire(req.resolve('@cocalc/fuse-native'))('node-gyp-build') as (dir: string) => FuseBinding
    )(pkgDir);
    return { FuseClass, binding };
  } catch (err) {
    throw new AtrestError('MISSING_TOOL', `the libfuse fallback backend is not built: ${whyNotBuilt(err)}`, {
      hint: NOT_BUILT_HINT,
      cause: err,
    });
  }
}

/** Whether the libfuse fallback backend can be used here (its binding loads). */
export function libfuseAvailable(): boolean {
  try {
    loadFuseNative();
    return true;
  } catch {
    return false;
  }
}

/** One line on why the binding did not load. */
function whyNotBuilt(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown };
  const msg = typeof e.message === 'string' ? (e.message.split('\n')[0] ?? '') : String(err);
  if (e.code === 'MODULE_NOT_FOUND' && msg.includes('@cocalc/fuse-native'))
    return 'the optional npm package @cocalc/fuse-native is not installed (its build failed or was skipped at set-up)';
  if (/No native build was found/i.test(msg))
    return '@cocalc/fuse-native is installed but its native part was not compiled (no build/Release/fuse.node)';
  if (/libfuse\.so/.test(msg)) return `the system library libfuse2 is missing (${msg})`;
  return `@cocalc/fuse-native did not load (${msg})`;
}

/**
 * One fuse-native session. We keep fuse-native's op dispatch (native thread pool → JS handlers),
 * but mount and unmount ourselves:
 * - fuse-native's open() refuses non-directory mount points and builds its own option list (no
 *   big_writes); mount() calls the native binding directly with our options and a FILE mount point
 *   (libfuse2 takes rootmode from the mount point's stat).
 * - its close() runs `fusermount -uz` via exec; release() only lets the native side go after the
 *   caller has unmounted the kernel side its own way.
 * - `timeout: false`: no per-operation 15 s ETIMEDOUT.
 */
export class NativeSession {
  readonly #fuse: FuseInternals;
  readonly #mnt: string;
  #thread: Buffer | null = null;

  readonly #binding: FuseBinding;

  constructor(mnt: string, ops: NativeOps) {
    const { FuseClass, binding } = loadFuseNative();
    this.#mnt = mnt;
    this.#binding = binding;
    this.#fuse = new FuseClass(mnt, ops, { timeout: false });
  }

  /**
   * Mounts (synchronously: mount(2) does not wait for the server) and resolves `onInit` when the
   * kernel's INIT has been answered. `options` is the text after `-o`.
   */
  mount(options: string, onInit: () => void): void {
    const thread = Buffer.alloc(this.#binding.sizeof_fuse_thread_t);
    this.#fuse._thread = thread;
    this.#fuse._openCallback = () => onInit();
    this.#binding.fuse_native_mount(
      this.#mnt,
      `-o${options}`,
      thread,
      this.#fuse,
      this.#fuse._malloc,
      this.#fuse._handlers,
      this.#fuse._getImplementedArray(),
    );
    this.#thread = thread;
  }

  /** Lets the native side go (after the kernel mount is gone): the event loop may exit again. */
  release(): void {
    if (this.#thread === null) return;
    this.#binding.fuse_native_unmount(this.#mnt, this.#thread);
    this.#thread = null;
  }
}
