// The params contract seen from Node, against a live eventbusd ($EVENTBUS_SERVER): each case
// raises to a subscriber the test runs itself and compares the exact bytes it receives. It also
// shows the keepCase pitfall: snake_case Value fields are dropped by proto-loader, and the server
// now refuses the empty Value instead of sending null.
'use strict';

const test = require('node:test');
const assert = require('node:assert');
const net = require('node:net');
const path = require('node:path');
const protoLoader = require('@grpc/proto-loader');
const {EventBus, LOADER_OPTIONS, grpc} = require('./eventbus');

const EVENT = 'E_CONTRACT_NODE';
const server = process.env.EVENTBUS_SERVER;
const protoDir = process.env.EVENTBUS_PROTO_DIR || path.join(__dirname, '..', '..', 'proto');

// The subscriber: EventBus's one connection, one notification in flight at a time (it ends where
// the bytes first parse as JSON).
const received = [];
const waiters = [];
let buffer = Buffer.alloc(0);
const connections = new Set();
const listener = net.createServer((conn) => {
  connections.add(conn);
  conn.on('data', (chunk) => {
    buffer = Buffer.concat([buffer, chunk]);
    try {
      JSON.parse(buffer.toString('utf8'));
    } catch {
      return;
    }
    received.push(buffer.toString('utf8'));
    buffer = Buffer.alloc(0);
    while (waiters.length && received.length) waiters.shift()(received.shift());
  });
});
function next() {
  if (received.length) return Promise.resolve(received.shift());
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no notification within 10 s')), 10000);
    waiters.push((m) => { clearTimeout(timer); resolve(m); });
  });
}

let bus;
let socket;
test.before(async () => {
  assert.ok(server, 'EVENTBUS_SERVER (HOST:PORT of a live eventbusd) is not set');
  await new Promise((resolve) => listener.listen(0, '127.0.0.1', resolve));
  socket = `tcp:127.0.0.1:${listener.address().port}`;
  bus = new EventBus(server);
  await bus.subscribe(EVENT, socket, {expireSeconds: 120});
});
test.after(async () => {
  await bus.unsubscribe({event: EVENT, socket});
  bus.close();
  listener.close();
  for (const conn of connections) conn.destroy();
});

async function expectParams(raiseOptions, params) {
  const answer = await bus.raise(EVENT, {sync: false, ...raiseOptions});
  // The compact async answer: counted, not listed.
  assert.strictEqual(answer.subscribers, 1);
  assert.strictEqual(answer.queued, 1);
  assert.strictEqual((answer.deliveries || []).length, 0);
  assert.strictEqual(await next(), `{"jsonrpc":"2.0","method":"${EVENT}","params":${params}}`);
}

async function expectInvalid(raiseOptions, fragment, client = bus) {
  await assert.rejects(client.raise(EVENT, {sync: false, ...raiseOptions}), (err) => {
    assert.strictEqual(err.code, grpc.status.INVALID_ARGUMENT, err.message);
    assert.ok(err.details.includes(fragment), `${err.details} lacks ${fragment}`);
    return true;
  });
}

test('BigInts, objects and json text arrive exactly', async () => {
  await expectParams({params: {a: 9007199254740993n, b: 12345678901234567890n,
                               c: -9223372036854775808n, d: 18446744073709551615n}},
                     '{"a":9007199254740993,"b":12345678901234567890,' +
                     '"c":-9223372036854775808,"d":18446744073709551615}');
  await expectParams({params: [['e', {z: 1, a: [2n ** 64n, 'x']}]]},
                     '{"e":{"z":1,"a":[18446744073709551616,"x"]}}');
});

test('an unsafe Number is refused before it is sent: JavaScript already rounded it', () => {
  assert.throws(() => bus.raise(EVENT, {params: {n: 9007199254740993}}), /beyond 2\^53/);
});

test('Value numbers are doubles, so big integers round (documented)', async () => {
  // Built by hand: a Value's numberValue is a double. Use a BigInt (json form) instead.
  const named = {params: [{name: 'n', value: {numberValue: Number('9007199254740993')}},
                          {name: 'm', value: {numberValue: Number('12345678901234567890')}}]};
  const answer = await bus.call('Raise', {event: EVENT, sync: false, named});
  assert.strictEqual(answer.subscribers, 1);
  assert.strictEqual(await next(), `{"jsonrpc":"2.0","method":"${EVENT}",` +
                                   '"params":{"n":9007199254740992,"m":1.2345678901234567e+19}}');
});

test('positional Values round; whole-params json is exact', async () => {
  await expectParams({positional: [{numberValue: Number('9007199254740993')}, {numberValue: 3}]},
                     '[9007199254740992,3]');
  await expectParams({json: '[9007199254740993, 12345678901234567890]'},
                     '[9007199254740993,12345678901234567890]');
});

test('NaN and Infinity are INVALID_ARGUMENT', async () => {
  await expectInvalid({params: {x: NaN}}, 'param "x": NaN cannot be sent as JSON');
  await expectInvalid({params: {y: Infinity}}, 'param "y": Infinity cannot be sent as JSON');
});

test('key order: kept by the json form, sorted by a Struct', async () => {
  await expectParams({params: {obj: {z: 1, a: {y: 2, b: 3}}}}, '{"obj":{"z":1,"a":{"y":2,"b":3}}}');
  const struct = {structValue: {fields: {z: {numberValue: 1}, a: {numberValue: 2}}}};
  const answer = await bus.call('Raise', {event: EVENT, sync: false,
                                          named: {params: [{name: 'obj', value: struct}]}});
  assert.strictEqual(answer.subscribers, 1);
  assert.strictEqual(await next(),
                     `{"jsonrpc":"2.0","method":"${EVENT}","params":{"obj":{"a":2,"z":1}}}`);
});

test('strings, booleans, numbers and null travel as Values', async () => {
  await expectParams({params: {s: 'café "q"', t: true, f: false, n: null, c: 3}},
                     '{"s":"café \\"q\\"","t":true,"f":false,"n":null,"c":3}');
});

test('keepCase pitfall: snake_case Value fields are dropped, and the server refuses the empty Value',
     async () => {
       // With keepCase: true this proto's fields are snake_case, but google.protobuf.Value keeps
       // camelCase: number_value is unknown and dropped, leaving a Value with nothing set.
       const definition = protoLoader.loadSync('eventbus/v1/eventbus.proto',
                                               {...LOADER_OPTIONS, keepCase: true, includeDirs: [protoDir]});
       const Service = grpc.loadPackageDefinition(definition).eventbus.v1.EventBusService;
       const pitfall = new EventBus(server, {Service});
       try {
         await assert.rejects(
             pitfall.call('Raise', {event: EVENT, sync: false,
                                    named: {params: [{name: 'count', value: {number_value: 3}}]}}),
             (err) => err.code === grpc.status.INVALID_ARGUMENT &&
                 err.details.includes('param "count": no value'));
       } finally {
         pitfall.close();
       }
       // The module's options (camelCase): the value arrives.
       await expectParams({params: [['count', 3]]}, '{"count":3}');
     });

test('an unset Value is INVALID_ARGUMENT naming the param', async () => {
  const answer = bus.call('Raise', {event: EVENT, sync: false,
                                    named: {params: [{name: 'count', value: {}}]}});
  await assert.rejects(answer, (err) => err.code === grpc.status.INVALID_ARGUMENT &&
                                       err.details.includes('param "count": no value'));
  await assert.rejects(bus.call('Raise', {event: EVENT, named: {params: [{name: 'count'}]}}),
                       (err) => err.details.includes('param "count": no value'));
});

test('subscription pages hold each subscription once, in socket order', async () => {
  const event = `${EVENT}_PAGES`;
  const sockets = [3, 1, 2].map((port) => `tcp:127.0.0.1:${port}`);
  for (const socket of sockets) await bus.subscribe(event, socket, {expireSeconds: 120});
  try {
    const pages = [];
    for await (const page of bus.subscriptionPages(event, {pageSize: 1})) pages.push(page);
    assert.deepStrictEqual(pages.map((p) => p.subscriptions.length), [1, 1, 1]);
    // An empty string is left out of the message (undefined) on the last page.
    assert.ok(pages.slice(0, -1).every((p) => p.nextPageToken));
    assert.ok(!pages[pages.length - 1].nextPageToken);
    assert.deepStrictEqual(pages.map((p) => p.subscriptions[0].socket), [...sockets].sort());
    await assert.rejects(bus.listSubscriptions(event, {pageSize: -1}),
                         (err) => err.code === grpc.status.INVALID_ARGUMENT &&
                             err.details.includes('page_size: -1 is negative'));
  } finally {
    for (const socket of sockets) await bus.unsubscribe({event, socket});
  }
});
