// Counters a test reads through GET /__test__/stats, e.g. to assert that a resumed upload did not
// send the file twice. They are kept in <data-dir>/stats.json so they add up across a restart;
// DELETE /__test__/stats zeroes them.

import fs from 'node:fs'
import path from 'node:path'

function empty() {
  return {upload_bytes_received: 0, requests: {}}
}

export class Stats {
  constructor(dataDir) {
    this.file = path.join(dataDir, 'stats.json')
    this.data = fs.existsSync(this.file) ? JSON.parse(fs.readFileSync(this.file, 'utf8')) : empty()
  }

  // `kind` is "<METHOD> <route family>", e.g. "PATCH upload".
  request(kind) {
    this.data.requests[kind] = (this.data.requests[kind] ?? 0) + 1
    this.save()
  }

  uploadBytes(count) {
    this.data.upload_bytes_received += count
  }

  reset() {
    this.data = empty()
    this.save()
  }

  save() {
    const tmp = `${this.file}.${process.pid}.tmp`
    fs.writeFileSync(tmp, JSON.stringify(this.data))
    fs.renameSync(tmp, this.file)
  }
}
