import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdirSync, renameSync, rmSync, statSync, type ReadStream } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { copyHashing } from '../src/workspace/artifacts.js';
import { ErrorCode, QwexError } from '../src/errors.js';
import type { ContentStore } from '../src/workspace/snapshot.js';
import type { Db } from './db/connect.js';

/** How many hashes go into one `IN (...)`: well under both SQLite's and PostgreSQL's parameter limits. */
const QUERY_CHUNK = 500;

/**
 * The server's content store: workspace files uploaded by clients and
 * artifacts collected from runs, by sha256, in qwex's ContentStore layout
 * (objects/ab/cdef..., read-only), with a `blobs` row for each. An object
 * is on disk before its row exists, and nothing is stored whose content does
 * not match its name.
 */
export class BlobStore {
  private readonly tmp: string;

  constructor(
    readonly content: ContentStore,
    private readonly database: Db,
  ) {
    this.tmp = join(content.root, 'tmp');
    mkdirSync(this.tmp, { recursive: true, mode: 0o700 });
  }

  /** The hashes of `wanted` that the store lacks, in the order given, each once. */
  async missing(wanted: readonly string[]): Promise<string[]> {
    const unique = [...new Set(wanted)];
    const known = new Set<string>();
    for (let i = 0; i < unique.length; i += QUERY_CHUNK) {
      const chunk = unique.slice(i, i + QUERY_CHUNK);
      const rows = await this.database.db.selectFrom('blobs').select('sha256').where('sha256', 'in', chunk).execute();
      for (const row of rows) if (this.content.has(row.sha256)) known.add(row.sha256);
    }
    return unique.filter((h) => !known.has(h));
  }

  /** Sizes of the stored blobs among `hashes`. */
  async sizes(hashes: readonly string[]): Promise<Map<string, number>> {
    const unique = [...new Set(hashes)];
    const sizes = new Map<string, number>();
    for (let i = 0; i < unique.length; i += QUERY_CHUNK) {
      const rows = await this.database.db.selectFrom('blobs').select(['sha256', 'size']).where('sha256', 'in', unique.slice(i, i + QUERY_CHUNK)).execute();
      for (const row of rows) if (this.content.has(row.sha256)) sizes.set(row.sha256, Number(row.size));
    }
    return sizes;
  }

  /**
   * Stores an upload that claims to be `sha256`, streaming it to a temporary
   * file while hashing and counting it. More than `maxBytes` is QWEX_TOO_LARGE,
   * another hash QWEX_USAGE; in both cases nothing is kept.
   */
  async receive(sha256: string, body: Readable, maxBytes: number): Promise<{ created: boolean; size: number }> {
    const tmp = join(this.tmp, `${sha256}.${randomBytes(6).toString('hex')}`);
    const hash = createHash('sha256');
    let size = 0;
    try {
      await pipeline(
        body,
        async function* (source: AsyncIterable<Buffer>) {
          for await (const chunk of source) {
            size += chunk.length;
            if (size > maxBytes) {
              throw new QwexError(ErrorCode.TooLarge, `the upload is larger than the server's limit of ${maxBytes} bytes`, {
                hint: 'leave large data out of the workspace (.qwexignore), or ask the admin to raise limits.upload_bytes',
              });
            }
            hash.update(chunk);
            yield chunk;
          }
        },
        createWriteStream(tmp, { mode: 0o444 }),
      );
      const actual = hash.digest('hex');
      if (actual !== sha256) {
        throw new QwexError(ErrorCode.Usage, `the uploaded content does not match its name: it hashes to ${actual}, not ${sha256}`, {
          hint: 'upload the file under its own sha256 (it may have changed while it was sent)',
        });
      }
      const created = this.place(tmp, sha256);
      await this.record(sha256, size);
      return { created, size };
    } finally {
      rmSync(tmp, { force: true });
    }
  }

  /** Copies a file in under its hash (the artifacts of a run), checking that the content is what it should be. */
  async adopt(path: string, sha256: string): Promise<number> {
    if (!this.content.has(sha256)) {
      const tmp = join(this.tmp, `${sha256}.${randomBytes(6).toString('hex')}`);
      try {
        const actual = await copyHashing(path, tmp, 0o444);
        if (actual !== sha256) throw new QwexError(ErrorCode.RecordInvalid, `${path} changed after it was captured (${actual}, not ${sha256})`);
        this.place(tmp, sha256);
      } finally {
        rmSync(tmp, { force: true });
      }
    }
    const size = statSync(this.content.objectPath(sha256)).size;
    await this.record(sha256, size);
    return size;
  }

  /** Opens a stored blob for reading; undefined when it is not on disk. */
  open(sha256: string): { stream: ReadStream; size: number } | undefined {
    const path = this.content.objectPath(sha256);
    if (!existsSync(path)) return undefined;
    return { stream: createReadStream(path), size: statSync(path).size };
  }

  private place(tmp: string, sha256: string): boolean {
    const target = this.content.objectPath(sha256);
    if (existsSync(target)) return false;
    mkdirSync(dirname(target), { recursive: true, mode: 0o700 });
    renameSync(tmp, target);
    return true;
  }

  private async record(sha256: string, size: number): Promise<void> {
    await this.database.db
      .insertInto('blobs')
      .values({ sha256, size, created_at: new Date().toISOString() })
      .onConflict((oc) => oc.column('sha256').doNothing())
      .execute();
  }
}
