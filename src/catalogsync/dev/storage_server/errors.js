// Supabase Storage's REST error envelope.
//
// The real server answers most errors with HTTP 400 and puts the semantic status, as a string, in
// the body: {"statusCode":"404","code":"NoSuchKey","error":"not_found","message":"Object not found"}.
// Only 500s keep their status on the wire. The TUS routes render the same errors differently: the
// semantic status becomes the HTTP status and `message` the text/plain body (see tus.js).

export class StorageError extends Error {
  constructor({code, status, message, error, httpStatus}) {
    super(message)
    this.code = code
    this.status = status
    this.error = error ?? code
    this.userStatus = httpStatus
  }

  render() {
    return {
      statusCode: String(this.status),
      code: this.code,
      error: this.error,
      message: this.message,
    }
  }

  get httpStatus() {
    return this.userStatus ?? (this.status === 500 ? 500 : 400)
  }
}

export const ERRORS = {
  accessDenied: (message = 'Invalid Compact JWS') =>
    new StorageError({code: 'AccessDenied', status: 403, error: 'Unauthorized', message}),
  noSuchBucket: () =>
    new StorageError({
      code: 'NoSuchBucket',
      status: 404,
      error: 'Bucket not found',
      message: 'Bucket not found',
    }),
  noSuchKey: () =>
    new StorageError({
      code: 'NoSuchKey',
      status: 404,
      error: 'not_found',
      message: 'Object not found',
    }),
  keyAlreadyExists: () =>
    new StorageError({
      code: 'KeyAlreadyExists',
      status: 409,
      error: 'Duplicate',
      message: 'The resource already exists',
    }),
  resourceAlreadyExists: () =>
    new StorageError({
      code: 'ResourceAlreadyExists',
      status: 409,
      error: 'Duplicate',
      message: 'The resource already exists',
    }),
  bucketAlreadyExists: () =>
    new StorageError({
      code: 'BucketAlreadyExists',
      status: 409,
      error: 'Duplicate',
      message: 'The resource already exists',
    }),
  bucketNotEmpty: () =>
    new StorageError({
      code: 'ResourceNotEmpty',
      status: 409,
      message: 'The bucket you tried to delete is not empty',
    }),
  invalidBucketName: () =>
    new StorageError({
      code: 'InvalidBucketName',
      status: 400,
      error: 'Invalid Input',
      message: 'Bucket name invalid',
    }),
  invalidKey: (key) =>
    new StorageError({code: 'InvalidKey', status: 400, message: `Invalid key: ${key}`}),
  // range.ts answers an unsatisfiable Range with HTTP 416 itself (withStatusCode(416)).
  invalidRange: () =>
    new StorageError({
      code: 'InvalidRange',
      status: 416,
      error: 'invalid_range',
      message: 'invalid range provided',
      httpStatus: 416,
    }),
  // What PostgreSQL's row-level security says to a role without a policy (the anon key).
  rowLevelSecurity: () =>
    new StorageError({
      code: 'AccessDenied',
      status: 403,
      error: 'Unauthorized',
      message: 'new row violates row-level security policy',
    }),
  invalidMimeType: (mimeType) =>
    new StorageError({
      code: 'InvalidMimeType',
      status: 415,
      error: 'invalid_mime_type',
      message: `mime type ${mimeType} is not supported`,
    }),
  entityTooLarge: () =>
    new StorageError({
      code: 'EntityTooLarge',
      status: 413,
      error: 'Payload too large',
      message: 'The object exceeded the maximum allowed size',
    }),
  metadataRequired: () =>
    new StorageError({
      code: 'InvalidRequest',
      status: 400,
      message: 'Metadata header is required',
    }),
  missingParameter: (name) =>
    new StorageError({
      code: 'MissingParameter',
      status: 400,
      message: `Missing Required Parameter ${name}`,
    }),
  invalidParameter: (name, message) =>
    new StorageError({
      code: 'InvalidParameter',
      status: 400,
      message: message ?? `Invalid Parameter ${name}`,
    }),
  invalidJson: () =>
    new StorageError({
      code: 'InvalidRequest',
      status: 400,
      message: 'Body is not valid JSON',
    }),
}

// Fastify's answer for an unknown route, which is what the real server sends too.
export function routeNotFound(method, path) {
  return {
    statusCode: 404,
    error: 'Not Found',
    message: `Route ${method}:${path} not found`,
  }
}
