// The REST routes under /storage/v1 (buckets, objects, copy) with Supabase's response shapes.

import {createHash} from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import {Transform} from 'node:stream'
import {pipeline} from 'node:stream/promises'
import {validateKey} from './catalog.js'
import {ERRORS, StorageError, routeNotFound} from './errors.js'

const MAX_JSON_BODY = 1024 * 1024
const SIZE_UNITS = {B: 1, KB: 1000, MB: 1000 ** 2, GB: 1000 ** 3}

export function sendJson(res, status, body, headers = {}) {
  const text = JSON.stringify(body)
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    ...headers,
  })
  res.end(text)
}

export function sendError(res, err) {
  if (err instanceof StorageError) {
    sendJson(res, err.httpStatus, err.render())
    return
  }
  console.error(err)
  const internal = new StorageError({
    code: 'InternalError',
    status: 500,
    error: 'Internal Server Error',
    message: 'Internal server error',
  })
  sendJson(res, 500, internal.render())
}

async function readJson(req) {
  let size = 0
  const parts = []
  for await (const chunk of req) {
    size += chunk.length
    if (size > MAX_JSON_BODY) {
      throw ERRORS.entityTooLarge()
    }
    parts.push(chunk)
  }
  if (size === 0) {
    return {}
  }
  try {
    return JSON.parse(Buffer.concat(parts).toString('utf8'))
  } catch {
    throw ERRORS.invalidJson()
  }
}

function required(body, name) {
  const value = body[name]
  if (typeof value !== 'string' || value === '') {
    throw ERRORS.missingParameter(name)
  }
  return value
}

function parseSizeLimit(value) {
  if (value === undefined || value === null) {
    return null
  }
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0) {
    return value
  }
  const match = /^(\d+)\s*(B|KB|MB|GB)$/i.exec(String(value).trim())
  if (!match) {
    throw ERRORS.invalidParameter(
      'file_size_limit',
      'Invalid file size format, hint: use 20GB / 20MB / 30KB / 3B',
    )
  }
  return Number(match[1]) * SIZE_UNITS[match[2].toUpperCase()]
}

// storage-js sends user metadata for standard uploads and copies as base64 JSON in x-metadata.
function headerUserMetadata(req) {
  const raw = req.headers['x-metadata']
  if (typeof raw !== 'string' || raw === '') {
    return undefined
  }
  try {
    return JSON.parse(Buffer.from(raw, 'base64').toString('utf8'))
  } catch {
    throw ERRORS.invalidParameter('x-metadata', 'x-metadata must be base64-encoded JSON')
  }
}

function isUpsert(req) {
  return req.headers['x-upsert'] === 'true'
}

function objectMetadata(row) {
  return {
    eTag: row.etag,
    size: row.size,
    mimetype: row.mimetype,
    cacheControl: row.cache_control,
    lastModified: row.updated_at,
    contentLength: row.size,
    httpStatusCode: 200,
  }
}

function objectResource(row) {
  return {
    id: row.id,
    name: row.name,
    bucket_id: row.bucket_id,
    owner: '',
    owner_id: '',
    version: row.version,
    created_at: row.created_at,
    updated_at: row.updated_at,
    last_accessed_at: row.updated_at,
    metadata: objectMetadata(row),
    user_metadata: row.user_metadata,
  }
}

function objectInfo(row) {
  return {
    id: row.id,
    name: row.name,
    version: row.version,
    bucket_id: row.bucket_id,
    size: row.size,
    content_type: row.mimetype,
    cache_control: row.cache_control,
    etag: row.etag,
    metadata: row.user_metadata,
    last_modified: row.updated_at,
    created_at: row.created_at,
  }
}

// `bytes=a-b`, `bytes=a-` or `bytes=-n`; anything else, a range past the end or any range of an
// empty object is invalid (416), as in Supabase's range.ts.
export function parseRange(header, size) {
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim())
  if (!match || size <= 0 || (match[1] === '' && match[2] === '')) {
    throw ERRORS.invalidRange()
  }
  let start
  let end
  if (match[1] === '') {
    const suffix = Number(match[2])
    if (suffix === 0) {
      throw ERRORS.invalidRange()
    }
    start = Math.max(0, size - suffix)
    end = size - 1
  } else {
    start = Number(match[1])
    end = match[2] === '' ? size - 1 : Math.min(Number(match[2]), size - 1)
  }
  if (start > end || start >= size) {
    throw ERRORS.invalidRange()
  }
  return {start, end}
}

// The object an object route names, whether it only reads, and whether Supabase registers it
// with allowInvalidJwt (GET /object/info/{bucket}/{key} and HEAD /object/{bucket}/{key}).
function objectTarget(parts, method) {
  const [head, second, third] = parts
  if (head !== 'object' || parts.length < 3 || second === 'copy') {
    return null
  }
  if (second === 'info') {
    const authenticated = third === 'authenticated'
    const rest = authenticated ? parts.slice(3) : parts.slice(2)
    if (method !== 'GET' || rest.length < 2) {
      return null
    }
    const name = rest.slice(1).join('/')
    return {bucketId: rest[0], name, read: 'info', allowsInvalidJwt: !authenticated}
  }
  const authenticated = second === 'authenticated'
  const rest = authenticated ? parts.slice(2) : parts.slice(1)
  if (rest.length < 2) {
    return null
  }
  const read = method === 'GET' || method === 'HEAD' ? 'download' : null
  const allowsInvalidJwt = method === 'HEAD' && !authenticated
  return {bucketId: rest[0], name: rest.slice(1).join('/'), read, allowsInvalidJwt}
}

export class Rest {
  constructor({catalog, config}) {
    this.catalog = catalog
    this.config = config
  }

  // `route` is the path after /storage/v1, still percent-encoded. `role` is the token's:
  // 'service_role', 'anon', or null for a missing or invalid one (see allowsInvalidJwt).
  async handle(req, res, route, query, role = 'service_role') {
    if (role !== 'service_role') {
      return this.limited(req, res, route, role)
    }
    const method = req.method
    const parts = route.split('/').slice(1).map(decodeURIComponent)
    const [head, second] = parts

    if (head === 'bucket') {
      return this.bucketRoutes(req, res, method, parts.slice(1))
    }
    if (head === 'object') {
      if (second === 'copy' && parts.length === 2 && method === 'POST') {
        return this.copy(req, res)
      }
      if (second === 'info') {
        const rest = parts[2] === 'authenticated' ? parts.slice(3) : parts.slice(2)
        if (method === 'GET' && rest.length >= 2) {
          return this.info(res, rest[0], rest.slice(1).join('/'))
        }
      } else if (second === 'authenticated') {
        if ((method === 'GET' || method === 'HEAD') && parts.length >= 4) {
          return this.download(req, res, parts[2], parts.slice(3).join('/'), query)
        }
      } else if (parts.length === 2 && method === 'DELETE') {
        return this.bulkDelete(req, res, second)
      } else if (parts.length >= 3) {
        const bucketId = second
        const name = parts.slice(2).join('/')
        if (method === 'GET' || method === 'HEAD') {
          return this.download(req, res, bucketId, name, query)
        }
        if (method === 'DELETE') {
          return this.deleteObject(res, bucketId, name)
        }
        if (method === 'POST' || method === 'PUT') {
          return this.standardUpload(req, res, bucketId, name, method === 'PUT')
        }
      }
    }
    req.resume()
    return sendJson(res, 404, routeNotFound(method, `/storage/v1${route}`))
  }

  // What a token that is not the service role gets. Supabase finds the bucket as superuser, then
  // reads objects as the token's role: RLS without a policy hides every object from anon and
  // refuses every new row. An invalid token is anonymous on the routes that allow it
  // (getObjectInfo.ts: a private bucket is then NoSuchBucket) and AccessDenied elsewhere.
  limited(req, res, route, role) {
    req.resume()
    const method = req.method
    const parts = route.split('/').slice(1).map(decodeURIComponent)
    const target = objectTarget(parts, method)
    if (role === null) {
      if (target?.allowsInvalidJwt) {
        const bucket = this.catalog.bucket(target.bucketId)
        if (!bucket?.public) {
          throw ERRORS.noSuchBucket()
        }
        return this.info(res, target.bucketId, target.name)
      }
      throw ERRORS.accessDenied()
    }
    if (target) {
      const bucket = this.catalog.requireBucket(target.bucketId)
      if (bucket.public && target.read) {
        return target.read === 'info'
          ? this.info(res, target.bucketId, target.name)
          : this.download(req, res, target.bucketId, target.name, new URLSearchParams())
      }
      if (target.read) {
        throw ERRORS.noSuchKey()
      }
    }
    if (parts[0] === 'bucket' && method === 'GET' && parts.length === 1) {
      return sendJson(res, 200, [])
    }
    throw ERRORS.rowLevelSecurity()
  }

  // Buckets

  async bucketRoutes(req, res, method, parts) {
    const catalog = this.catalog
    if (parts.length === 0 || (parts.length === 1 && parts[0] === '')) {
      if (method === 'GET') {
        return sendJson(res, 200, [...catalog.buckets.values()])
      }
      if (method === 'POST') {
        const body = await readJson(req)
        const name = required(body, 'name')
        const bucket = catalog.createBucket({
          id: body.id || name,
          name,
          isPublic: body.public,
          fileSizeLimit: parseSizeLimit(body.file_size_limit),
          allowedMimeTypes: body.allowed_mime_types ?? null,
        })
        return sendJson(res, 200, {name: bucket.id})
      }
    } else if (parts.length === 1) {
      if (method === 'GET') {
        return sendJson(res, 200, catalog.requireBucket(parts[0]))
      }
      if (method === 'DELETE') {
        catalog.deleteBucket(parts[0])
        return sendJson(res, 200, {message: 'Successfully deleted'})
      }
    } else if (parts.length === 2 && parts[1] === 'empty' && method === 'POST') {
      catalog.requireBucket(parts[0])
      for (const row of catalog.list(parts[0])) {
        catalog.delete(row.bucket_id, row.name)
      }
      return sendJson(res, 200, {message: 'Successfully emptied'})
    }
    req.resume()
    return sendJson(res, 404, routeNotFound(method, `/storage/v1/bucket/${parts.join('/')}`))
  }

  // Objects

  info(res, bucketId, name) {
    return sendJson(res, 200, objectInfo(this.catalog.requireObject(bucketId, name)))
  }

  download(req, res, bucketId, name, query) {
    const row = this.catalog.requireObject(bucketId, name)
    const headers = {
      'content-type': row.mimetype,
      'cache-control': row.cache_control,
      etag: row.etag,
      'last-modified': row.last_modified,
      'accept-ranges': 'bytes',
    }
    if (query.has('download')) {
      const filename = query.get('download') || path.posix.basename(name)
      headers['content-disposition'] = `attachment; filename=${encodeURIComponent(filename)};`
    }
    let status = 200
    let start = 0
    let end = row.size - 1
    const range = req.headers.range
    if (range !== undefined) {
      ;({start, end} = parseRange(range, row.size))
      status = 206
      headers['content-range'] = `bytes ${start}-${end}/${row.size}`
    }
    headers['content-length'] = String(row.size === 0 ? 0 : end - start + 1)
    // Open before answering so that a replacement committed meanwhile cannot unlink our bytes.
    const stream = row.size > 0 ? fs.createReadStream(this.catalog.pathOf(row), {start, end}) : null
    res.writeHead(status, headers)
    if (req.method === 'HEAD' || stream === null) {
      stream?.destroy()
      res.end()
      return
    }
    return pipeline(stream, res).catch(() => res.destroy())
  }

  deleteObject(res, bucketId, name) {
    this.catalog.requireObject(bucketId, name)
    this.catalog.delete(bucketId, name)
    return sendJson(res, 200, {message: 'Successfully deleted'})
  }

  async bulkDelete(req, res, bucketId) {
    const body = await readJson(req)
    this.catalog.requireBucket(bucketId)
    if (!Array.isArray(body.prefixes)) {
      throw ERRORS.missingParameter('prefixes')
    }
    const deleted = []
    for (const name of body.prefixes) {
      const row = typeof name === 'string' ? this.catalog.delete(bucketId, name) : undefined
      if (row) {
        deleted.push(objectResource(row))
      }
    }
    return sendJson(res, 200, deleted)
  }

  async copy(req, res) {
    const body = await readJson(req)
    const bucketId = required(body, 'bucketId')
    const sourceKey = required(body, 'sourceKey')
    const destinationKey = validateKey(required(body, 'destinationKey'))
    const destinationBucket = body.destinationBucket || bucketId
    const copyMetadata = body.copyMetadata ?? true
    const upsert = isUpsert(req)
    const userMetadata = headerUserMetadata(req)

    const source = this.catalog.requireObject(bucketId, sourceKey)
    this.catalog.requireBucket(destinationBucket)
    if (!upsert && this.catalog.object(destinationBucket, destinationKey)) {
      throw ERRORS.keyAlreadyExists()
    }
    const version = this.catalog.newVersion()
    const target = this.catalog.versionPath(destinationBucket, destinationKey, version)
    await fs.promises.mkdir(path.dirname(target), {recursive: true})
    await fs.promises.copyFile(this.catalog.pathOf(source), target)
    try {
      const row = this.catalog.commit({
        bucketId: destinationBucket,
        name: destinationKey,
        version,
        size: source.size,
        etag: source.etag,
        mimetype: copyMetadata
          ? source.mimetype
          : body.metadata?.mimetype || 'application/octet-stream',
        cacheControl: copyMetadata
          ? source.cache_control
          : body.metadata?.cacheControl || 'no-cache',
        // As Supabase's copyObject: x-metadata counts only with copyMetadata: false.
        userMetadata: copyMetadata ? source.user_metadata : (userMetadata ?? null),
        upsert,
      })
      return sendJson(res, 200, {
        Id: row.id,
        Key: `${destinationBucket}/${destinationKey}`,
        ...objectResource(row),
      })
    } catch (err) {
      await fs.promises.rm(target, {force: true})
      throw err
    }
  }

  // POST creates (honouring x-upsert), PUT replaces. Raw bodies only, no multipart.
  async standardUpload(req, res, bucketId, name, isUpdate) {
    const upsert = isUpdate || isUpsert(req)
    validateKey(name)
    const bucket = this.catalog.requireBucket(bucketId)
    const contentType = req.headers['content-type'] || 'application/octet-stream'
    if (contentType.startsWith('multipart/form-data')) {
      throw ERRORS.invalidParameter(
        'content-type',
        'multipart uploads are not supported by this server; send the raw bytes',
      )
    }
    if (!upsert && this.catalog.object(bucketId, name)) {
      throw ERRORS.keyAlreadyExists()
    }
    const userMetadata = headerUserMetadata(req)
    const limit = Math.min(bucket.file_size_limit || Infinity, this.config.fileSizeLimit)
    const version = this.catalog.newVersion()
    const target = this.catalog.versionPath(bucketId, name, version)
    await fs.promises.mkdir(path.dirname(target), {recursive: true})
    const hash = createHash('md5')
    let size = 0
    const meter = new Transform({
      transform(chunk, _encoding, callback) {
        size += chunk.length
        if (size > limit) {
          callback(ERRORS.entityTooLarge())
          return
        }
        hash.update(chunk)
        callback(null, chunk)
      },
    })
    try {
      await pipeline(req, meter, fs.createWriteStream(target))
      const row = this.catalog.commit({
        bucketId,
        name,
        version,
        size,
        etag: `"${hash.digest('hex')}"`,
        mimetype: contentType,
        cacheControl: req.headers['cache-control'] || 'no-cache',
        userMetadata,
        upsert,
      })
      return sendJson(res, 200, {Id: row.id, Key: `${bucketId}/${name}`})
    } catch (err) {
      await fs.promises.rm(target, {force: true})
      throw err
    }
  }
}
