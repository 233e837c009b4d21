// The resumable-upload routes: tus-node-server (@tus/server + @tus/file-store, the library the real
// Supabase Storage runs) wired with the same lifecycle hooks Supabase uses: the upload id is
// `<bucket>/<objectName>/<version>` sent base64url-encoded in the URL, x-upsert is checked on every
// POST, PATCH and DELETE, and the object row appears only when the final PATCH has landed.

import {createHash} from 'node:crypto'
import fs from 'node:fs'
import {pipeline} from 'node:stream/promises'
import {validateBucketName, validateKey} from './catalog.js'
import {ERRORS, StorageError} from './errors.js'

export const TUS_PATH = '/storage/v1/upload/resumable'
export const CHUNK_SIZE = 6 * 1024 * 1024

const LAST_SEGMENT = /([^/]+)\/?$/
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

function tusError(status_code, body) {
  return {status_code, body}
}

function parseUploadId(id) {
  const parts = id.split('/')
  const version = parts.pop()
  const bucket = parts.shift()
  return {bucket, name: parts.join('/'), version}
}

function isUpsert(req) {
  return req.headers.get('x-upsert') === 'true'
}

function cacheControlFrom(value) {
  return /^-?\d+$/.test(value ?? '') ? `max-age=${value}` : 'no-cache'
}

function mimeAllowed(mimeType, allowed) {
  if (!allowed || allowed.length === 0) {
    return true
  }
  const [type] = mimeType.split('/')
  return allowed.some((rule) => rule === mimeType || rule === `${type}/*`)
}

function parseUserMetadata(raw) {
  if (!raw) {
    return undefined
  }
  try {
    return JSON.parse(raw)
  } catch {
    console.error(`ignoring Upload-Metadata "metadata": not valid JSON: ${raw.slice(0, 80)}`)
    return undefined
  }
}

export async function md5File(file) {
  const hash = createHash('md5')
  await pipeline(fs.createReadStream(file), hash)
  return `"${hash.digest('hex')}"`
}

// A FileStore that counts every body byte it accepts, for GET /__test__/stats.
function countingStore(FileStore, options, stats) {
  class CountingFileStore extends FileStore {
    write(readable, id, offset) {
      readable.on('data', (chunk) => stats.uploadBytes(chunk.length))
      return super.write(readable, id, offset).finally(() => stats.save())
    }
  }
  return new CountingFileStore(options)
}

export function createTusServer({tus, fileStore, catalog, stats, config}) {
  const datastore = countingStore(
    fileStore.FileStore,
    {directory: catalog.filesDir, expirationPeriodInMilliseconds: config.uploadExpiryMs},
    stats,
  )

  async function enforceChunkSize(req, id) {
    let upload
    try {
      upload = await datastore.getUpload(id)
    } catch {
      return // unknown or expired: tus answers 404/410 itself
    }
    const declared = req.headers.get('content-length')
    if (declared === null) {
      throw tusError(411, 'Content-Length is required: chunks must be exactly 6291456 bytes')
    }
    const length = Number.parseInt(declared, 10)
    const offset = Number.parseInt(req.headers.get('upload-offset') ?? '', 10)
    const isFinal = upload.size !== undefined && offset + length === upload.size
    if (length > CHUNK_SIZE) {
      throw tusError(413, `Chunk too large: ${length} bytes; send chunks of exactly ${CHUNK_SIZE}`)
    }
    if (!isFinal && length !== CHUNK_SIZE) {
      throw tusError(
        400,
        `Invalid chunk size: ${length} bytes; every chunk but the last must be ${CHUNK_SIZE}`,
      )
    }
  }

  return new tus.Server({
    path: TUS_PATH,
    datastore,
    respectForwardedHeaders: true,
    disableTerminationForFinishedUploads: true,
    allowedHeaders: ['Authorization', 'X-Upsert', 'Upload-Expires', 'ApiKey', 'x-signature'],
    maxSize: (_req, id) => {
      if (!id) {
        return config.fileSizeLimit
      }
      const bucket = catalog.bucket(parseUploadId(id).bucket)
      const limit = bucket?.file_size_limit
      return limit && limit < config.fileSizeLimit ? limit : config.fileSizeLimit
    },

    namingFunction: (_req, metadata) => {
      if (!metadata) {
        throw ERRORS.metadataRequired()
      }
      const bucket = validateBucketName(metadata.bucketName || '')
      const name = validateKey(metadata.objectName || '')
      return `${bucket}/${name}/${catalog.newVersion()}`
    },

    generateUrl: (_req, {proto, host, path, id}) =>
      `${proto}://${host}${path}/${Buffer.from(id, 'utf8').toString('base64url')}`,

    getFileIdFromRequest: (_req, lastPath) => {
      if (!lastPath || TUS_PATH.endsWith(`/${lastPath}`)) {
        return undefined
      }
      const id = Buffer.from(lastPath, 'base64url').toString('utf8')
      const {bucket, name, version} = parseUploadId(id)
      try {
        validateBucketName(bucket)
        validateKey(name)
      } catch {
        return undefined
      }
      return UUID.test(version) ? id : undefined
    },

    onIncomingRequest: async (req, id) => {
      if (req.method === 'HEAD' || req.method === 'OPTIONS') {
        return
      }
      const {bucket, name} = parseUploadId(id)
      catalog.requireBucket(bucket)
      if (catalog.object(bucket, name) && !isUpsert(req)) {
        throw ERRORS.keyAlreadyExists()
      }
      if (req.method === 'PATCH' && config.enforceChunkSize) {
        await enforceChunkSize(req, id)
      }
    },

    onUploadCreate: async (_req, upload) => {
      const bucket = catalog.requireBucket(parseUploadId(upload.id).bucket)
      const metadata = {...upload.metadata}
      metadata.cacheControl = cacheControlFrom(metadata.cacheControl)
      if (metadata.contentType && !mimeAllowed(metadata.contentType, bucket.allowed_mime_types)) {
        throw ERRORS.invalidMimeType(metadata.contentType)
      }
      return {metadata}
    },

    onUploadFinish: async (req, upload) => {
      const {bucket, name, version} = parseUploadId(upload.id)
      const file = catalog.versionPath(bucket, name, version)
      const etag = await md5File(file)
      const previous = catalog.object(bucket, name)
      // Observed on the real server: an upsert without "metadata" keeps the old user metadata.
      const userMetadata = parseUserMetadata(upload.metadata?.metadata) ?? previous?.user_metadata
      catalog.commit({
        bucketId: bucket,
        name,
        version,
        size: fs.statSync(file).size,
        etag,
        mimetype: upload.metadata?.contentType || 'application/octet-stream',
        cacheControl: upload.metadata?.cacheControl || 'no-cache',
        userMetadata,
        upsert: isUpsert(req),
      })
      return {headers: {'Tus-Complete': '1'}}
    },

    onResponseError: (_req, err) => {
      if (err instanceof StorageError) {
        return {status_code: err.status, body: err.message}
      }
      return undefined
    },
  })
}
