// A Socket.IO 4.8 server for redial's test suites, on 127.0.0.1 only,
// WebSocket transport only, connection state recovery on.
//
//   node server.mjs [--port N] [--recovery-ms MS] [--ping-interval MS]
//                   [--ping-timeout MS] [--redis URL]
//
// Port 0 (the default) picks a free port. Without --redis the recovery
// state lives in the process (the in-memory adapter); with it, in Redis
// streams (@socket.io/redis-streams-adapter), so a restarted server can
// still recover sessions.
//
// It prints `listening PORT` on stdout once it accepts connections (the
// Rust launcher waits for it), then `connected recovered=true|false` for
// each socket joining `/`.
//
// Control requests (plain HTTP GET on the same port, answered with one
// line of text):
//   /control/emit?n=N&event=E  broadcast E N times with the arguments 1..N
//                              (a broadcast carries its offset, so it can
//                              be recovered); answers `emitted N`
//   /control/kick              disconnect every socket on purpose (the
//                              client sees io server disconnect); answers
//                              `kicked N`
//
// On SIGTERM it closes every socket as a server shutting down, lets the
// adapter save the sessions, and exits: with --redis, a server started
// afterwards recovers them.
//
// Events a client may emit: `sum` (a, b, ack) answers a + b; `echo`
// (...args) is emitted back to the sender. A CONNECT whose auth holds
// `{"token":"bad"}` is refused with the message `not authorized`.
import { createServer } from 'node:http';
import { Server } from 'socket.io';

function option(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  if (at !== -1 && at + 1 < process.argv.length) return process.argv[at + 1];
  return fallback;
}

const port = Number(option('port', '0'));
const recoveryMs = Number(option('recovery-ms', '120000'));
const pingInterval = Number(option('ping-interval', '25000'));
const pingTimeout = Number(option('ping-timeout', '20000'));
const redisUrl = option('redis', '');

// Created with its handler before Socket.IO attaches: Engine.IO passes on
// the requests outside its own path.
const http = createServer(async (req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  let answer;
  if (url.pathname === '/control/emit') {
    const n = Number(url.searchParams.get('n') ?? '1');
    const event = url.searchParams.get('event') ?? 'tick';
    for (let i = 1; i <= n; i++) io.emit(event, i);
    answer = `emitted ${n}`;
  } else if (url.pathname === '/control/kick') {
    const sockets = await io.fetchSockets();
    for (const s of sockets) s.disconnect(true);
    answer = `kicked ${sockets.length}`;
  } else {
    res.writeHead(404).end('not found\n');
    return;
  }
  res.writeHead(200, { 'content-type': 'text/plain' }).end(`${answer}\n`);
});
const io = new Server(http, {
  transports: ['websocket'],
  pingInterval,
  pingTimeout,
  connectionStateRecovery: {
    maxDisconnectionDuration: recoveryMs,
    skipMiddlewares: true,
  },
});

if (redisUrl) {
  const { createClient } = await import('redis');
  const { createAdapter } = await import('@socket.io/redis-streams-adapter');
  const client = createClient({ url: redisUrl });
  client.on('error', (e) => console.error(`redis: ${e.message}`));
  await client.connect();
  io.adapter(createAdapter(client));
}

io.use((socket, next) => {
  if (socket.handshake.auth && socket.handshake.auth.token === 'bad') {
    next(new Error('not authorized'));
  } else {
    next();
  }
});

io.on('connection', (socket) => {
  console.log(`connected recovered=${socket.recovered}`);
  socket.on('sum', (a, b, ack) => {
    if (typeof ack === 'function') ack(a + b);
  });
  socket.on('echo', (...args) => socket.emit('echo', ...args));
});

// SIGTERM closes every socket the way a server shutting down does (a reason
// the adapter keeps the session for), gives the adapter a moment to save
// the sessions (in Redis, with --redis), then exits.
process.on('SIGTERM', () => {
  io.close();
  setTimeout(() => process.exit(0), 500);
});

http.listen(port, '127.0.0.1', () => {
  console.log(`listening ${http.address().port}`);
});
