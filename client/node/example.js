#!/usr/bin/env node
// Subscribes a JSON-RPC server, raises an event async and sync, lists, and unsubscribes.
// Usage: node example.js SERVER SOCKET [EVENT]
//   SERVER  the EventBus gRPC address, e.g. 127.0.0.1:50051
//   SOCKET  the subscriber, e.g. tcp:127.0.0.1:8080 (a JSON-RPC server that answers requests)
'use strict';

const {EventBus, formatDelivery, stateName, durationMs} = require('./eventbus');

async function main([server, socket, event = 'E_NODE', ...rest]) {
  if (!server || !socket || rest.length) {
    console.error('usage: node example.js SERVER SOCKET [EVENT]');
    return 2;
  }
  // The params of both Raises, in this order on the wire. The BigInt and the object travel as
  // JSON text (exact, "z" before "a"); the boolean, the string and the small number travel as
  // google.protobuf.Value ({boolValue}, {stringValue}, {numberValue}).
  const params = {
    id: 12345678901234567890n,
    obj: {z: 1, a: {y: [true, null], b: 'x'}},
    ok: true,
    name: 'café',
    count: 3,
  };
  const bus = new EventBus(server);
  try {
    const {subscription: sub, created} = await bus.subscribe(event, socket, {expireSeconds: 60});
    console.log(`subscribed ${sub.id} ${sub.event} ${sub.socket} created=${created}`);

    for (const sync of [false, true]) {
      // Every delivery, QUEUED ones too, so the async answer shows its one target.
      const answer = await bus.raise(event, {params, sync, timeoutMs: 5000, allDeliveries: true});
      console.log(`raise ${sync ? 'sync' : 'async'}: subscribers=${answer.subscribers}`);
      for (const d of answer.deliveries) console.log(`  ${formatDelivery(d)}`);
    }

    // Page by page (the server answers at most pageSize per call; 0: its default).
    const subscriptions = [];
    let stale = false;
    for await (const page of bus.subscriptionPages(event, {pageSize: 100})) {
      subscriptions.push(...page.subscriptions);
      stale = stale || page.stale;
    }
    console.log(`list ${event}: ${subscriptions.length} subscription(s)` +
                (stale ? ' (stale)' : ''));
    for (const s of subscriptions) {
      const targets = s.targets.map((t) => `${t.address} ${stateName(t.state)} ` +
                                           `delivered=${t.delivered || 0} failed=${t.failed || 0}`);
      console.log(`  ${s.id}  ${s.event}  ${s.socket}  ttl=${Math.floor(durationMs(s.ttl) / 1e3)}s` +
                  `  [${targets.join(', ')}]`);
    }

    console.log(`unsubscribed removed=${await bus.unsubscribe({id: sub.id})}`);
    return 0;
  } catch (err) {
    console.error(`example: ${err.code !== undefined ? err.code + ' ' : ''}${err.details || err.message}`);
    return 1;
  } finally {
    bus.close();
  }
}

main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
