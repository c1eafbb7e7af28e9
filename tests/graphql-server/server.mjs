// A graphql-transport-ws server for redial's test suites, on 127.0.0.1 only.
//
//   node server.mjs [--port N] [--token T] [--keepalive MS] [--init-timeout MS]
//
// Environment fallbacks: PORT, AUTH_TOKEN, KEEPALIVE_MS, INIT_TIMEOUT_MS.
// Port 0 (the default) picks a free port. When it accepts connections the
// server prints one line `listening PORT` on stdout; the Rust launcher waits
// for it.
//
// Schema:
//   query        { hello }
//   mutation     { publish(topic, text) }  -> how many subscribers got it
//   subscription { ticks(every, count) }   -> 1, 2, 3, ... every `every` ms
//   subscription { echo(topic) }           -> each text published to topic
//
// With a token set, `connection_init` must carry `{"token": T}`; otherwise
// onConnect refuses and the library closes with 4403 Forbidden. A subscribe
// before the ack gets the library's 4401, a second init its 4429, no init
// within the timeout its 4408.
import { createServer } from 'node:http';
import { buildSchema } from 'graphql';
import { WebSocketServer } from 'ws';
import { useServer } from 'graphql-ws/use/ws';

function option(name, env, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  if (at !== -1 && at + 1 < process.argv.length) return process.argv[at + 1];
  if (process.env[env] !== undefined) return process.env[env];
  return fallback;
}

const port = Number(option('port', 'PORT', '0'));
const token = option('token', 'AUTH_TOKEN', '');
const keepAlive = Number(option('keepalive', 'KEEPALIVE_MS', '12000'));
const initTimeout = Number(option('init-timeout', 'INIT_TIMEOUT_MS', '3000'));

const schema = buildSchema(`
  type Query { hello: String }
  type Mutation { publish(topic: String!, text: String!): Int }
  type Subscription {
    ticks(every: Int!, count: Int): Int
    echo(topic: String!): String
  }
`);

// topic -> set of queues, one per active `echo` subscription.
const topics = new Map();

function subscribeTopic(topic) {
  const pending = [];
  let wake = null;
  let done = false;
  const listeners = topics.get(topic) ?? new Set();
  topics.set(topic, listeners);
  const push = (text) => {
    pending.push(text);
    if (wake) wake();
  };
  listeners.add(push);
  const stop = () => {
    done = true;
    listeners.delete(push);
    if (wake) wake();
  };
  return {
    [Symbol.asyncIterator]() {
      return this;
    },
    async next() {
      while (!done && pending.length === 0) {
        await new Promise((resolve) => (wake = resolve));
        wake = null;
      }
      if (done) return { done: true, value: undefined };
      return { done: false, value: { echo: pending.shift() } };
    },
    async return() {
      stop();
      return { done: true, value: undefined };
    },
  };
}

const roots = {
  query: { hello: () => 'world' },
  mutation: {
    publish: ({ topic, text }) => {
      const listeners = topics.get(topic) ?? new Set();
      for (const push of listeners) push(text);
      return listeners.size;
    },
  },
  subscription: {
    ticks: async function* ({ every, count }) {
      for (let n = 1; count == null || n <= count; n++) {
        await new Promise((resolve) => setTimeout(resolve, every));
        yield { ticks: n };
      }
    },
    echo: ({ topic }) => subscribeTopic(topic),
  },
};

const http = createServer((_, res) => {
  res.writeHead(426).end('WebSocket only');
});
const wss = new WebSocketServer({ server: http, path: '/graphql' });

useServer(
  {
    schema,
    roots,
    connectionInitWaitTimeout: initTimeout,
    onConnect: (ctx) => !token || ctx.connectionParams?.token === token,
  },
  wss,
  keepAlive,
);

http.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening ${http.address().port}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
