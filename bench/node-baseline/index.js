'use strict';
// The stack evhost replaces, reduced to what scripts/bench compares:
//
//   node index.js api     --port P --brokers B [--prefix node.]
//       Express: POST /crud/:name stores nothing and awaits producer.send of
//       the document (KafkaJS, idempotent, acks=-1) to topic PREFIX+name
//       before answering 201, like the old services did; GET /healthz.
//   node index.js sink    --port P --brokers B --topic T --group G
//       a KafkaJS consumer (eachMessage, as the old workers): for every
//       message whose JSON value has "t" (a client's wall-clock send time in
//       µs) it records the delay until eachMessage ran. GET /stats gives
//       {"consumed":N,"e2e_us":[...]}, POST /reset forgets them, GET /healthz
//       answers 200 once the consumer has joined its group.
//   node index.js consume --brokers B --topic T --group G --count N [--timeout S]
//       a KafkaJS consumer that reads N messages and prints
//       {"consumed":N,"seconds":first-to-last} on stdout.
//
// Everything listens on 127.0.0.1; KafkaJS logs errors only, to stderr.

const crypto = require('node:crypto');
const http = require('node:http');
const { performance } = require('node:perf_hooks');
const express = require('express');
const { Kafka, logLevel } = require('kafkajs');

function parseArgs(argv) {
  const out = { _: [] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i].startsWith('--')) {
      out[argv[i].slice(2)] = argv[i + 1];
      i++;
    } else {
      out._.push(argv[i]);
    }
  }
  return out;
}

function need(args, name) {
  if (args[name] === undefined) {
    console.error(`node-baseline: --${name} is required`);
    process.exit(2);
  }
  return args[name];
}

function kafkaClient(args, clientId) {
  return new Kafka({
    clientId,
    brokers: need(args, 'brokers').split(','),
    logLevel: logLevel.ERROR,
  });
}

// Wall-clock microseconds, comparable with the client's and evhost's clocks.
function wallUs() {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

function ceHeaders(type) {
  return {
    ce_id: crypto.randomUUID(),
    ce_type: type,
    ce_source: 'node-baseline',
    ce_specversion: '1.0',
    ce_time: new Date().toISOString(),
    'content-type': 'application/json',
  };
}

async function runApi(args) {
  const prefix = args.prefix || 'node.';
  const producer = kafkaClient(args, 'node-baseline-api').producer({
    idempotent: true, // KafkaJS: needs acks=-1 and allows one request in flight
    maxInFlightRequests: 1,
  });
  await producer.connect();
  const app = express();
  app.use(express.json({ limit: '1mb' }));
  app.get('/healthz', (req, res) => res.json({ status: 'ok' }));
  app.post('/crud/:name', async (req, res) => {
    if (!req.body || typeof req.body !== 'object' || Array.isArray(req.body)) {
      res.status(422).json({ detail: 'the body must be a JSON object' });
      return;
    }
    const doc = { id: crypto.randomUUID(), ...req.body };
    try {
      await producer.send({
        topic: prefix + req.params.name,
        acks: -1,
        messages: [{ key: doc.id, value: JSON.stringify(doc),
                     headers: ceHeaders(`crud.${req.params.name}.created`) }],
      });
    } catch (err) {
      res.status(503).json({ detail: String(err && err.message) });
      return;
    }
    res.status(201).location(`/crud/${req.params.name}/${doc.id}`).json(doc);
  });
  const server = app.listen(Number(need(args, 'port')), '127.0.0.1');
  const stop = async () => {
    server.close();
    await producer.disconnect();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

function sentAt(message) {
  try {
    const v = JSON.parse(message.value.toString());
    return typeof v.t === 'number' ? v.t : 0;
  } catch (err) {
    return 0;
  }
}

async function runSink(args) {
  const consumer = kafkaClient(args, 'node-baseline-sink').consumer({
    groupId: need(args, 'group'),
  });
  const stats = { consumed: 0, e2e: [] };
  let joined = false;
  consumer.on(consumer.events.GROUP_JOIN, () => { joined = true; });
  await consumer.connect();
  await consumer.subscribe({ topic: need(args, 'topic'), fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ message }) => {
      const t = sentAt(message);
      stats.consumed++;
      if (t > 0)
        stats.e2e.push(wallUs() - t);
    },
  });
  const server = http.createServer((req, res) => {
    if (req.url === '/healthz') {
      res.writeHead(joined ? 200 : 503).end();
    } else if (req.url === '/stats') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ consumed: stats.consumed, e2e_us: stats.e2e }));
    } else if (req.url === '/reset' && req.method === 'POST') {
      stats.consumed = 0;
      stats.e2e = [];
      res.writeHead(204).end();
    } else {
      res.writeHead(404).end();
    }
  });
  server.listen(Number(need(args, 'port')), '127.0.0.1');
  const stop = async () => {
    server.close();
    await consumer.disconnect();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

async function runConsume(args) {
  const count = Number(need(args, 'count'));
  const timeoutMs = Number(args.timeout || 120) * 1000;
  const consumer = kafkaClient(args, 'node-baseline-consume').consumer({
    groupId: need(args, 'group'),
  });
  let n = 0;
  let first = 0;
  let last = 0;
  let finish;
  const done = new Promise((resolve) => { finish = resolve; });
  const timer = setTimeout(() => finish(), timeoutMs);
  await consumer.connect();
  await consumer.subscribe({ topic: need(args, 'topic'), fromBeginning: true });
  await consumer.run({
    eachMessage: async () => {
      last = performance.now();
      if (n++ === 0)
        first = last;
      if (n === count)
        finish();
    },
  });
  await done;
  clearTimeout(timer);
  await consumer.disconnect();
  const result = { count, consumed: n, seconds: (last - first) / 1000 };
  process.stdout.write(JSON.stringify(result) + '\n');
  if (n < count)
    console.error(`node-baseline: only ${n} of ${count} messages within ${timeoutMs / 1000} s`);
  process.exit(n >= count ? 0 : 1);
}

const args = parseArgs(process.argv.slice(2));
const modes = { api: runApi, sink: runSink, consume: runConsume };
const mode = modes[args._[0]];
if (!mode) {
  console.error('usage: node index.js api|sink|consume --brokers B ... (see the top of index.js)');
  process.exit(2);
}
mode(args).catch((err) => {
  console.error(`node-baseline ${args._[0]}: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});
