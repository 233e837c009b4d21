// The bucket and object rows: what Supabase keeps in its `storage` schema in PostgreSQL.
//
// Rows live in memory and are written to <data-dir>/catalog.json (temp file + rename) after every
// change, so a restarted server sees the same objects. Object bytes live in
// <data-dir>/files/<bucket>/<name>/<version>, which is also where the TUS file store writes an
// upload (its id is `<bucket>/<name>/<version>`), exactly like Supabase's file backend: finishing
// an upload only has to add the row. Every mutation is synchronous, so a reader always sees either
// the old row or the new one, never a mix; the replaced version's bytes are removed afterwards
// (readers that already opened them keep reading: POSIX unlink semantics).

import {randomUUID} from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import {ERRORS} from './errors.js'

// Supabase's isValidKey / isValidBucketName character sets.
const KEY_CHARS = /^(\w|\/|!|-|\.|\*|'|\(|\)| |&|\$|@|=|;|:|\+|,|\?)*$/
const BUCKET_CHARS = /^(\w|!|-|\.|\*|'|\(|\)| |&|\$|@|=|;|:|\+|,|\?)*$/

export function validateKey(key) {
  if (typeof key !== 'string' || key.length === 0 || !KEY_CHARS.test(key)) {
    throw ERRORS.invalidKey(key)
  }
  // Stricter than hosted: names map to directories here, so no empty, "." or ".." segments.
  if (key.split('/').some((part) => part === '' || part === '.' || part === '..')) {
    throw ERRORS.invalidKey(key)
  }
  return key
}

export function validateBucketName(name) {
  if (
    typeof name !== 'string' ||
    name.length === 0 ||
    name.length > 100 ||
    !BUCKET_CHARS.test(name) ||
    name === '.' ||
    name === '..'
  ) {
    throw ERRORS.invalidBucketName()
  }
  return name
}

function nowIso() {
  return new Date().toISOString()
}

export class Catalog {
  constructor(dataDir) {
    this.filesDir = path.join(dataDir, 'files')
    this.file = path.join(dataDir, 'catalog.json')
    fs.mkdirSync(this.filesDir, {recursive: true})
    const saved = fs.existsSync(this.file)
      ? JSON.parse(fs.readFileSync(this.file, 'utf8'))
      : {buckets: {}, objects: {}}
    this.buckets = new Map(Object.entries(saved.buckets))
    this.objects = new Map(Object.entries(saved.objects))
  }

  save() {
    const tmp = `${this.file}.${process.pid}.tmp`
    const data = {
      buckets: Object.fromEntries(this.buckets),
      objects: Object.fromEntries(this.objects),
    }
    fs.writeFileSync(tmp, JSON.stringify(data))
    fs.renameSync(tmp, this.file)
  }

  // Buckets

  bucket(id) {
    return this.buckets.get(id)
  }

  requireBucket(id) {
    const bucket = this.buckets.get(id)
    if (!bucket) {
      throw ERRORS.noSuchBucket()
    }
    return bucket
  }

  createBucket({id, name, isPublic = false, fileSizeLimit = null, allowedMimeTypes = null}) {
    validateBucketName(id)
    if (this.buckets.has(id)) {
      throw ERRORS.bucketAlreadyExists()
    }
    const at = nowIso()
    const bucket = {
      id,
      name: name ?? id,
      owner: '',
      public: Boolean(isPublic),
      type: 'STANDARD',
      file_size_limit: fileSizeLimit,
      allowed_mime_types: allowedMimeTypes,
      created_at: at,
      updated_at: at,
    }
    this.buckets.set(id, bucket)
    this.save()
    return bucket
  }

  deleteBucket(id) {
    this.requireBucket(id)
    if (this.list(id).length > 0) {
      throw ERRORS.bucketNotEmpty()
    }
    this.buckets.delete(id)
    this.save()
  }

  // Objects

  object(bucketId, name) {
    return this.objects.get(`${bucketId}/${name}`)
  }

  requireObject(bucketId, name) {
    this.requireBucket(bucketId)
    const row = this.object(bucketId, name)
    if (!row) {
      throw ERRORS.noSuchKey()
    }
    return row
  }

  list(bucketId) {
    return [...this.objects.values()].filter((row) => row.bucket_id === bucketId)
  }

  newVersion() {
    return randomUUID()
  }

  versionPath(bucketId, name, version) {
    return path.join(this.filesDir, bucketId, ...name.split('/'), version)
  }

  pathOf(row) {
    return this.versionPath(row.bucket_id, row.name, row.version)
  }

  // Make `version` (already written to versionPath) the object's current bytes. Throws
  // KeyAlreadyExists when the name is taken and `upsert` is false; the caller cleans up.
  commit({bucketId, name, version, size, etag, mimetype, cacheControl, userMetadata, upsert}) {
    this.requireBucket(bucketId)
    const previous = this.object(bucketId, name)
    if (previous && !upsert) {
      throw ERRORS.keyAlreadyExists()
    }
    const at = nowIso()
    const row = {
      id: previous?.id ?? randomUUID(),
      bucket_id: bucketId,
      name,
      version,
      size,
      etag,
      mimetype,
      cache_control: cacheControl,
      user_metadata: userMetadata ?? null,
      created_at: previous?.created_at ?? at,
      updated_at: at,
      last_modified: new Date().toUTCString(),
    }
    this.objects.set(`${bucketId}/${name}`, row)
    this.save()
    if (previous && previous.version !== version) {
      this.removeVersion(previous)
    }
    return row
  }

  delete(bucketId, name) {
    const row = this.object(bucketId, name)
    if (!row) {
      return undefined
    }
    this.objects.delete(`${bucketId}/${name}`)
    this.save()
    this.removeVersion(row)
    return row
  }

  removeVersion(row) {
    const file = this.pathOf(row)
    // The TUS file store keeps `<file>.json` next to an upload's bytes.
    for (const victim of [file, `${file}.json`]) {
      fs.rm(victim, {force: true}, () => {})
    }
  }
}
