// Starts the AT Protocol reference network (PLC directory, PDS, AppView) from @atproto/dev-env
// on 127.0.0.1 only, prints one line of JSON with its URLs once it is ready, and runs until
// its standard input closes or it gets SIGTERM.
//
//   node network.mjs   (run by tests/realnet/conftest.py with the packages of install.sh)
//
// Environment: LOPPER_REALNET_MODULES (the folder install.sh printed), LOPPER_REALNET_PG (a postgres:// URL, required) and LOPPER_REALNET_SCHEMA
// (letters and underscores; the AppView, bsync and ozone each make a schema named after it).
//
// It also serves a small control endpoint on 127.0.0.1 for the tests:
//   POST /process   waits until the AppView has indexed everything the PDS has written
import http from 'node:http'
import { createRequire } from 'node:module'
import net from 'node:net'
import path from 'node:path'
import { pathToFileURL } from 'node:url'

// Every server binds to loopback: the packages listen on all interfaces by default.
const listen = net.Server.prototype.listen
net.Server.prototype.listen = function (...args) {
  const [first] = args
  if (first !== null && typeof first === 'object') {
    if (first.path === undefined && first.fd === undefined && first.handle === undefined) {
      args[0] = { ...first, host: '127.0.0.1' }
    }
  } else if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
    // listen(port[, host][, backlog][, callback]): whatever host was named becomes loopback
    args = [Number(first), '127.0.0.1', ...args.slice(1).filter((a) => typeof a !== 'string')]
  } else if (first === undefined || typeof first === 'function') {
    args = [0, '127.0.0.1', ...args]
  }
  return listen.apply(this, args)
}

const pg = process.env.LOPPER_REALNET_PG
const schema = process.env.LOPPER_REALNET_SCHEMA || 'lopper_realnet'
if (!pg) {
  console.error('LOPPER_REALNET_PG is not set')
  process.exit(2)
}
if (!/^[A-Za-z_]+$/.test(schema)) {
  console.error(`LOPPER_REALNET_SCHEMA must be letters and underscores only: ${schema}`)
  process.exit(2)
}
// dev-env asks for a Redis host that nothing in this network connects to.
process.env.REDIS_HOST = process.env.REDIS_HOST || '127.0.0.1:6379'

// The packages live outside the clone (install.sh): resolve them from there.
const modules = process.env.LOPPER_REALNET_MODULES || process.cwd()
const require = createRequire(path.join(modules, 'package.json'))
const { TestNetwork } = await import(pathToFileURL(require.resolve('@atproto/dev-env')).href)

const network = await TestNetwork.create({
  dbPostgresUrl: pg,
  dbPostgresSchema: schema,
})

const control = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/process') {
    network
      .processAll()
      .then(() => {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end('{"ok":true}')
      })
      .catch((err) => {
        res.writeHead(500, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ ok: false, error: String(err) }))
      })
    return
  }
  res.writeHead(404)
  res.end()
})
await new Promise((resolve) => control.listen(0, '127.0.0.1', resolve))

const loopback = (url) => url.replace('//localhost:', '//127.0.0.1:')
console.log(
  JSON.stringify({
    plc: loopback(network.plc.url),
    pds: loopback(network.pds.url),
    bsky: loopback(network.bsky.url),
    control: `http://127.0.0.1:${control.address().port}`,
  }),
)

let closing = false
const stop = async () => {
  if (closing) return
  closing = true
  control.close()
  try {
    await network.close()
  } catch (err) {
    console.error(`closing the network: ${err}`)
  }
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
process.stdin.on('end', stop)
process.stdin.resume()
