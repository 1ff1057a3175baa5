// The reference tracker for `python -m bench tracker`: npm bittorrent-tracker's
// HTTP tracker alone (no UDP, no WebSocket, no stats page), in memory.
//
//   node bench/npm_tracker.mjs PORT [HOST]
//
// Imports only bittorrent-tracker/server, so the client side (WebRTC, native
// node-datachannel) is never loaded; the package's optional native modules
// (bufferutil, utf-8-validate) are not needed either (npm ci --ignore-scripts).
// Prints "listening <port>" once it accepts connections; stops on SIGTERM/SIGINT.
import Server from 'bittorrent-tracker/server'

const port = Number(process.argv[2] || 0)
const host = process.argv[3] || '127.0.0.1'

const server = new Server({ udp: false, ws: false, http: true, stats: false })
server.on('error', err => {
  console.error(`error: ${err.message}`)
  process.exit(1)
})
server.on('warning', () => {}) // malformed requests are answered; don't log each one
server.listen(port, host, () => {
  console.log(`listening ${server.http.address().port}`)
})

const stop = () => server.close(() => process.exit(0))
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
