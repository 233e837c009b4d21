// A local Supabase Storage API for tests and the demo: Supabase's routes under /storage/v1, its
// error envelopes and its TUS behaviour, on the same TUS library Supabase runs. State lives in
// --data-dir, so the server can be stopped and started again mid-upload.
//
// Started by catalogsync.dev.storage_server (Python), which installs the npm dependencies into a
// cache directory and passes it as --node-prefix. On start it prints one JSON line to stdout:
// {"event":"listening","port":N,"url":"http://HOST:N/storage/v1"}.

import http from 'node:http'
import {createRequire} from 'node:module'
import path from 'node:path'
import {pathToFileURL} from 'node:url'
import {parseArgs} from 'node:util'
import {Catalog} from './catalog.js'
import {ERRORS} from './errors.js'
import {Rest, sendError, sendJson} from './rest.js'
import {Stats} from './stats.js'
import {TUS_PATH, createTusServer} from './tus.js'

const PREFIX = '/storage/v1'
const TEST_STATS = '/__test__/stats'

function parseOptions(argv) {
  const {values} = parseArgs({
    args: argv,
    options: {
      host: {type: 'string', default: '127.0.0.1'},
      port: {type: 'string', default: '0'},
      'data-dir': {type: 'string'},
      'service-key': {type: 'string', default: process.env.STORAGE_SERVICE_ROLE_KEY ?? ''},
      'anon-key': {type: 'string', default: process.env.STORAGE_ANON_KEY ?? ''},
      'enforce-chunk-size': {type: 'boolean', default: false},
      'upload-expiry-ms': {type: 'string', default: '3600000'},
      'file-size-limit': {type: 'string', default: String(50 * 1024 ** 3)},
      bucket: {type: 'string', multiple: true, default: []},
      'node-prefix': {type: 'string'},
      'parent-pid': {type: 'string'},
    },
  })
  if (!values['data-dir']) {
    throw new Error('--data-dir is required')
  }
  if (!values['service-key']) {
    throw new Error('--service-key (or STORAGE_SERVICE_ROLE_KEY) is required')
  }
  return {
    host: values.host,
    port: Number.parseInt(values.port, 10),
    dataDir: path.resolve(values['data-dir']),
    serviceKey: values['service-key'],
    anonKey: values['anon-key'],
    enforceChunkSize: values['enforce-chunk-size'],
    uploadExpiryMs: Number.parseInt(values['upload-expiry-ms'], 10),
    fileSizeLimit: Number.parseInt(values['file-size-limit'], 10),
    buckets: values.bucket,
    nodePrefix: values['node-prefix'],
    parentPid: values['parent-pid'] ? Number.parseInt(values['parent-pid'], 10) : undefined,
  }
}

// ESM ignores NODE_PATH, so modules installed outside this folder are resolved by hand.
function loader(nodePrefix) {
  if (!nodePrefix) {
    return (name) => import(name)
  }
  const require = createRequire(path.join(path.resolve(nodePrefix), 'package.json'))
  return (name) => import(pathToFileURL(require.resolve(name)).href)
}

// The role of the request's token: the service key, the anon key, or null for anything else (a
// missing, malformed or wrongly signed token). Tokens are compared whole, not verified.
function roleOf(req, config) {
  const header = req.headers.authorization ?? ''
  const match = /^Bearer\s+(.+)$/i.exec(header)
  const token = match?.[1].trim()
  if (token === config.serviceKey) {
    return 'service_role'
  }
  if (config.anonKey && token === config.anonKey) {
    return 'anon'
  }
  return null
}

function respondAfterBody(req, respond) {
  // Read (and drop) any body first: answering mid-upload would make clients see a broken pipe.
  if (req.complete) {
    respond()
    return
  }
  req.on('end', respond)
  req.on('error', () => {})
  req.resume()
}

function drain(req) {
  return new Promise((resolve) => {
    if (req.complete || req.readableEnded || req.destroyed) {
      resolve()
      return
    }
    req.on('end', resolve)
    req.on('close', resolve)
    req.on('error', resolve)
    req.resume()
  })
}

// Like tusServer.handle(), but an error answer waits until the client has sent its whole body:
// tus answers a refused PATCH before reading it, and closing the socket under a client that is
// still sending makes it see a connection reset instead of the status.
async function handleTus(tusServer, srvx, req, res) {
  const response = await tusServer.handleWeb(new srvx.NodeRequest({req, res}))
  if (response.status >= 400) {
    await drain(req)
  }
  return srvx.sendNodeResponse(res, response)
}

function exitWithParent(parentPid) {
  const timer = setInterval(() => {
    try {
      process.kill(parentPid, 0)
    } catch {
      console.error(`parent process ${parentPid} is gone; stopping`)
      process.kill(process.pid, 'SIGTERM')
    }
  }, 1000)
  timer.unref()
}

async function main() {
  const config = parseOptions(process.argv.slice(2))
  const load = loader(config.nodePrefix)
  const [tus, fileStore, srvx] = await Promise.all([
    load('@tus/server'),
    load('@tus/file-store'),
    load('srvx/node'),
  ])

  const catalog = new Catalog(config.dataDir)
  for (const id of config.buckets) {
    if (!catalog.bucket(id)) {
      catalog.createBucket({id})
    }
  }
  const stats = new Stats(config.dataDir)
  const tusServer = createTusServer({tus, fileStore, catalog, stats, config})
  const rest = new Rest({catalog, config})

  const server = http.createServer(async (req, res) => {
    try {
      const url = new URL(req.url ?? '/', 'http://localhost')
      const pathname = url.pathname
      if (pathname === TEST_STATS) {
        if (req.method === 'DELETE') {
          stats.reset()
        }
        return sendJson(res, 200, stats.data)
      }
      if (pathname === TUS_PATH || pathname.startsWith(`${TUS_PATH}/`)) {
        stats.request(`${req.method} upload`)
        const role = req.method === 'OPTIONS' ? 'service_role' : roleOf(req, config)
        if (role === null) {
          const denied = ERRORS.accessDenied()
          return respondAfterBody(req, () => sendJson(res, 400, denied.render()))
        }
        if (role === 'anon') {
          // The anon key is a valid JWT, but RLS on storage.objects has no policy for it.
          const text = ERRORS.rowLevelSecurity().message
          return respondAfterBody(req, () => {
            res.writeHead(403, {'content-type': 'text/plain', 'tus-resumable': '1.0.0'})
            res.end(text)
          })
        }
        return await handleTus(tusServer, srvx, req, res)
      }
      if (pathname === `${PREFIX}/status`) {
        req.resume()
        res.writeHead(200, {'content-length': '0'})
        return res.end()
      }
      if (pathname.startsWith(`${PREFIX}/`)) {
        const route = pathname.slice(PREFIX.length)
        return await rest.handle(req, res, route, url.searchParams, roleOf(req, config))
      }
      req.resume()
      return sendJson(res, 404, {
        statusCode: 404,
        error: 'Not Found',
        message: `Route ${req.method}:${pathname} not found`,
      })
    } catch (err) {
      if (res.headersSent) {
        res.destroy()
        return
      }
      respondAfterBody(req, () => sendError(res, err))
    }
  })
  // Large PATCH bodies over slow loopback clients must not be cut by Node's request timeout.
  server.requestTimeout = 0

  const shutdown = (signal) => {
    console.error(`received ${signal}; stopping`)
    stats.save()
    server.close(() => process.exit(0))
    server.closeAllConnections()
    setTimeout(() => process.exit(0), 2000).unref()
  }
  process.on('SIGTERM', shutdown)
  process.on('SIGINT', shutdown)
  if (config.parentPid) {
    exitWithParent(config.parentPid)
  }

  server.listen(config.port, config.host, () => {
    const {port} = server.address()
    const host = config.host.includes(':') ? `[${config.host}]` : config.host
    const line = {event: 'listening', port, url: `http://${host}:${port}${PREFIX}`}
    process.stdout.write(`${JSON.stringify(line)}\n`)
  })
}

main().catch((err) => {
  console.error(err instanceof Error ? err.stack : err)
  process.exit(1)
})
