// A Socket.IO 4.8 node as its users would run one for resumable sessions:
// connection state recovery on, the Redis Streams adapter on a shared
// redis-server, WebSocket transport only. The bench `e2e-socketio` starts
// one or more of these on 127.0.0.1 and measures them next to
// redial-server.
//
// Usage: node --expose-gc server.mjs <redis-url> <stream-name>
// Prints `LISTENING <port>` once it accepts connections. Events from
// clients: `sub` (room), with an acknowledgement, joins a room; `pub`
// (room, data) emits `msg` (data) to that room through the adapter. Lines
// on stdin: `gc` runs a full collection and answers `GC`; `stats` answers
// `LIVE <connected clients>`; `stop` closes the server (every socket is
// disconnected with a recoverable reason, so the adapter saves its session
// in Redis), answers `STOPPED` and exits.
import { createServer } from "node:http";
import { createInterface } from "node:readline";
import { createClient } from "redis";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-streams-adapter";

const [redisUrl, streamName] = process.argv.slice(2);
if (!redisUrl || !streamName) {
  console.error("usage: server.mjs <redis-url> <stream-name>");
  process.exit(2);
}

const redis = createClient({ url: redisUrl });
redis.on("error", (e) => console.error("redis:", e.message));
await redis.connect();

const http = createServer();
const io = new Server(http, {
  transports: ["websocket"],
  // Default disconnection window (2 min); middlewares skipped on recovery,
  // as the Socket.IO documentation suggests for this feature.
  connectionStateRecovery: { maxDisconnectionDuration: 2 * 60 * 1000, skipMiddlewares: true },
  adapter: createAdapter(redis, { streamName, sessionKeyPrefix: `${streamName}:session:` }),
  // Messages of the bench are 1 KiB; the default limit is 1 MB.
  maxHttpBufferSize: 1e6,
});

io.on("connection", (socket) => {
  socket.on("sub", (room, ack) => {
    if (typeof room === "string") socket.join(room);
    if (typeof ack === "function") ack();
  });
  socket.on("pub", (room, data) => {
    if (typeof room === "string") io.to(room).emit("msg", data);
  });
});

http.listen(0, "127.0.0.1", () => {
  console.log(`LISTENING ${http.address().port}`);
});

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  const cmd = line.trim();
  if (cmd === "gc") {
    if (typeof global.gc === "function") global.gc();
    console.log("GC");
  } else if (cmd === "stats") {
    console.log(`LIVE ${io.engine.clientsCount}`);
  } else if (cmd === "stop") {
    io.close(() => {
      // persistSession writes are sent on the shared client; let them land.
      setTimeout(() => {
        console.log("STOPPED");
        process.exit(0);
      }, 500);
    });
  }
});
// The bench is gone: so is this node.
lines.on("close", () => process.exit(0));
