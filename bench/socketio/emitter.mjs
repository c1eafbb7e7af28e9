// A Socket.IO 4.8 server that emits events to a client as fast as the
// client takes them, for the client bench `e2e-sio-client`: WebSocket
// transport only, in-memory adapter, no connection state recovery (every
// client reads the same frames).
//
// Usage: node emitter.mjs
// Prints `LISTENING <port>` once it accepts connections on 127.0.0.1.
// A client emits `go` (count, size): the server emits `count` events
// `e` to that socket, each with one string argument of `size` bytes, then
// the event `done` (count). Events are emitted while the
// Engine.IO write buffer holds fewer than HIGH packets and resumed on its
// `drain`, so the kernel's socket buffers, not Node's memory, hold what
// the client has not read yet. Lines on stdin: `stop` closes the server,
// answers `STOPPED` and exits.
import { createServer } from "node:http";
import { createInterface } from "node:readline";
import { Server } from "socket.io";

// Packets buffered in Engine.IO before the emitter waits for a drain.
const HIGH = 512;
// The largest event asked for.
const MAX_SIZE = 64 * 1024;
// The most events one `go` may ask for.
const MAX_COUNT = 100_000_000;

const http = createServer();
const io = new Server(http, {
  transports: ["websocket"],
  // One frame per event: compression would cost both sides the same and
  // measure zlib rather than the clients.
  perMessageDeflate: false,
});

io.on("connection", (socket) => {
  // The frames of one Engine.IO flush leave in one write: without this,
  // ws writes each event's frame to the TCP socket on its own, a system
  // call per event, and the server rather than the client sets the pace.
  const tcp = socket.conn.transport.socket?._socket;
  if (tcp) {
    socket.conn.on("flush", () => tcp.cork());
    socket.conn.on("drain", () => tcp.uncork());
  }
  let busy = false;
  socket.on("go", (count, size) => {
    if (busy || !Number.isInteger(count) || !Number.isInteger(size)) return;
    if (count < 0 || count > MAX_COUNT || size < 0 || size > MAX_SIZE) return;
    busy = true;
    const data = "x".repeat(size);
    let left = count;
    // The first emit on an idle transport flushes at once and fires
    // `drain` from inside the loop: that call must not run a second loop.
    let pumping = false;
    const pump = () => {
      if (pumping) return;
      pumping = true;
      while (left > 0 && socket.conn.writeBuffer.length < HIGH) {
        socket.emit("e", data);
        left--;
      }
      pumping = false;
      if (left === 0) {
        socket.conn.off("drain", pump);
        socket.emit("done", count);
        busy = false;
      }
    };
    socket.conn.on("drain", pump);
    pump();
  });
});

http.listen(0, "127.0.0.1", () => {
  console.log(`LISTENING ${http.address().port}`);
});

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  if (line.trim() === "stop") {
    io.close(() => {
      console.log("STOPPED");
      process.exit(0);
    });
  }
});
// The bench is gone: so is this server.
lines.on("close", () => process.exit(0));
