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
const byteWaiters = [];  // nextBytes's, woken by every chunk
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
  conn.on('data', () => { for (const wake of byteWaiters.splice(0)) wake(); });
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

// The subscriber's next `length` bytes, several notifications at once.
function nextBytes(length) {
  const take = () => {
    const all = Buffer.concat([Buffer.from(received.splice(0).join(''), 'utf8'), buffer]);
    buffer = Buffer.alloc(0);
    return all;
  };
  return new Promise((resolve, reject) => {
    let got = take();
    if (got.length >= length) return resolve(got.toString('utf8'));
    const timer = setTimeout(() => reject(new Error(`only ${got} within 10 s`)), 10000);
    const wake = () => {
      got = Buffer.concat([got, take()]);
      if (got.length < length) return byteWaiters.push(wake);
      clearTimeout(timer);
      resolve(got.toString('utf8'));
    };
    byteWaiters.push(wake);
  });
}

test('RaiseStream: one result per event in order, the bad one an error, delivered in order',
     async () => {
       const stream = bus.raiseStream({deadlineMs: 30000});
       // Three messages; the second's middle event has a bad name. Built as raise() builds them.
       const messages = [
         [{event: EVENT, sync: false, params: {seq: 0, id: 12345678901234567890n}},
          {event: EVENT, sync: false, params: [['seq', 1], ['obj', {z: 1, a: 2}]]},
          {event: EVENT, sync: false, json: '[2, 18446744073709551615]'}],
         [{event: EVENT, sync: false, params: {seq: 3, s: 'café'}},
          {event: 'bad event!', sync: false, params: {seq: -1}},
          {event: EVENT, sync: false, params: {seq: 4, n: null, t: true}}],
         [{event: EVENT, sync: false, params: {seq: 5, f: 1.5}},
          {event: EVENT, sync: false, params: {seq: 6, id: -9223372036854775808n}}],
       ];
       const sending = (async () => {
         for (const m of messages) await stream.send(m);
         stream.end();
       })();
       const results = [];
       for await (const r of stream) results.push(r);
       await sending;
       assert.deepStrictEqual(results.map((r) => [r.message, r.index, r.event.event, !r.error]), [
         [0, 0, EVENT, true], [0, 1, EVENT, true], [0, 2, EVENT, true],
         [1, 0, EVENT, true], [1, 1, 'bad event!', false], [1, 2, EVENT, true],
         [2, 0, EVENT, true], [2, 1, EVENT, true]]);
       for (const r of results.filter((r) => !r.error)) {
         assert.deepStrictEqual([r.response.subscribers, r.response.queued], [1, 1]);
       }
       const bad = results[4];
       assert.strictEqual(bad.response, undefined);
       assert.strictEqual(bad.error.code, grpc.status.INVALID_ARGUMENT);
       assert.ok(bad.error.details.startsWith('event [1]: '), bad.error.details);
       assert.ok(bad.error.details.includes('bad event!'), bad.error.details);
       const wire = ['{"seq":0,"id":12345678901234567890}', '{"seq":1,"obj":{"z":1,"a":2}}',
                     '[2,18446744073709551615]', '{"seq":3,"s":"café"}',
                     '{"seq":4,"n":null,"t":true}', '{"seq":5,"f":1.5}',
                     '{"seq":6,"id":-9223372036854775808}']
           .map((p) => `{"jsonrpc":"2.0","method":"${EVENT}","params":${p}}`).join('');
       assert.strictEqual(await nextBytes(Buffer.byteLength(wire)), wire);
     });

test('RaiseStream: a stream error is thrown as a gRPC error, after the earlier answers',
     async () => {
       const stream = bus.raiseStream({deadlineMs: 30000});
       // A message of more than 10000 events ends the stream; the one before it is answered.
       await stream.send([{event: EVENT, sync: false, params: {seq: 7}}]);
       stream.send(new Array(10001).fill({event: EVENT})).catch(() => {});
       const results = [];
       await assert.rejects((async () => {
         for await (const r of stream) results.push(r);
       })(), (err) => {
         assert.strictEqual(err.code, grpc.status.INVALID_ARGUMENT, err.message);
         assert.ok(err.details.includes('message 2 has more than 10000 events'), err.details);
         return true;
       });
       assert.deepStrictEqual(results.map((r) => [r.message, r.index, !r.error]), [[0, 0, true]]);
       // The call has failed: a later send is refused with the same error.
       await assert.rejects(stream.send([{event: EVENT}]),
                            (err) => err.code === grpc.status.INVALID_ARGUMENT);
       const wire = `{"jsonrpc":"2.0","method":"${EVENT}","params":{"seq":7}}`;
       assert.strictEqual(await nextBytes(Buffer.byteLength(wire)), wire);
     });

test('RaiseStream: a server gone is UNAVAILABLE', async () => {
  const gone = net.createServer();
  await new Promise((resolve) => gone.listen(0, '127.0.0.1', resolve));
  const address = `127.0.0.1:${gone.address().port}`;
  await new Promise((resolve) => gone.close(resolve));
  const nobody = new EventBus(address);
  try {
    const stream = nobody.raiseStream({deadlineMs: 10000});
    stream.send([{event: EVENT}]).catch(() => {});
    stream.end();
    await assert.rejects((async () => {
      for await (const r of stream) assert.fail(`a result from nobody: ${JSON.stringify(r)}`);
    })(), (err) => err.code === grpc.status.UNAVAILABLE);
  } finally {
    nobody.close();
  }
});

test('RaiseStream: leaving the loop early cancels the call', async () => {
  const stream = bus.raiseStream({deadlineMs: 10000});
  // grpc-js does not end a call whose Node stream is destroyed (what a for-await break does):
  // the wrapper cancels it, which ends the call with CANCELLED.
  const status = new Promise((resolve) => stream.call.on('status', resolve));
  await stream.send([{event: `${EVENT}_NOBODY`}, {event: `${EVENT}_NOBODY`}]);
  for await (const r of stream) {
    assert.ok(r.response, JSON.stringify(r));
    break;
  }
  assert.strictEqual((await status).code, grpc.status.CANCELLED);
  await assert.rejects(stream.send([{event: EVENT}]),
                       (err) => err.code === grpc.status.CANCELLED);
});
