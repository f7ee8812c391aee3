// A small Node client for EventBus (eventbus.v1.EventBusService) on @grpc/grpc-js and
// @grpc/proto-loader, which reads proto/eventbus/v1/eventbus.proto at run time (no generated code).
//
// The pitfall this module avoids: proto-loader's `keepCase: true` keeps this proto's snake_case
// names, but google.protobuf.Value/Struct come from protobufjs's bundled copies, whose fields are
// always camelCase. `{number_value: 3}` is then an unknown field, dropped without a word, and the
// server gets a Value with nothing set (it answers INVALID_ARGUMENT `param "count": no value`; it
// used to send null). So: keepCase false (the default) and camelCase everywhere — `expireSeconds`,
// `timeoutMs`, `{numberValue: 3}`, `{stringValue: "x"}`, `{boolValue: true}`.
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const LOADER_OPTIONS = {
  keepCase: false, // see above: camelCase names for every message, well-known types included
  longs: String, // uint64 counters and int64 error codes as strings, never rounded
  enums: String, // 'DELIVERY_STATUS_OK' rather than 2
  defaults: false,
  oneofs: true,
};

// Loads the service from protoDir (default: the repository's proto/ folder).
function loadService(protoDir = process.env.EVENTBUS_PROTO_DIR ||
                     path.join(__dirname, '..', '..', 'proto')) {
  const definition = protoLoader.loadSync('eventbus/v1/eventbus.proto',
                                          {...LOADER_OPTIONS, includeDirs: [protoDir]});
  return grpc.loadPackageDefinition(definition).eventbus.v1.EventBusService;
}

// Returns `value` as JSON text: BigInts as exact integers, object keys in insertion order (note
// that JavaScript itself puts integer-like keys such as "1" first). Throws on NaN, Infinity and
// integers beyond 2^53 (already rounded by JavaScript: give them as BigInt or a string).
function toJson(value, where) {
  switch (typeof value) {
    case 'bigint':
      return value.toString();
    case 'number':
      if (!Number.isFinite(value)) throw new RangeError(`${where}: ${value} cannot be sent as JSON`);
      if (Number.isInteger(value) && !Number.isSafeInteger(value)) {
        throw new RangeError(`${where}: ${value} is beyond 2^53 and already rounded; use a BigInt`);
      }
      return JSON.stringify(value);
    case 'string':
    case 'boolean':
      return JSON.stringify(value);
    case 'object':
      if (value === null) return 'null';
      if (Array.isArray(value)) {
        return '[' + value.map((v, i) => toJson(v, `${where}[${i}]`)).join(',') + ']';
      }
      return '{' + Object.entries(value).map(
          ([k, v]) => JSON.stringify(k) + ':' + toJson(v, `${where}.${k}`)).join(',') + '}';
    default:
      throw new TypeError(`${where}: cannot send a ${typeof value}`);
  }
}

// Returns an eventbus.v1.Param carrying `value` exactly: BigInts, objects and arrays as JSON text
// (Param.json); strings, booleans, null and numbers within 2^53 as a google.protobuf.Value.
function param(name, value) {
  const where = `param ${JSON.stringify(name)}`;
  switch (typeof value) {
    case 'string':
      return {name, value: {stringValue: value}};
    case 'boolean':
      return {name, value: {boolValue: value}};
    case 'number':
      if (Number.isInteger(value) && !Number.isSafeInteger(value)) toJson(value, where);  // throws
      return {name, value: {numberValue: value}};  // NaN and Infinity: the server refuses them
    default:
      if (value === null) return {name, value: {nullValue: 'NULL_VALUE'}};
      return {name, json: toJson(value, where)};
  }
}

// Returns NamedParams from an object (keys in insertion order) or an array of [name, value].
function namedParams(params) {
  const entries = Array.isArray(params) ? params : Object.entries(params);
  return {params: entries.map(([name, value]) => param(name, value))};
}

// Returns the RaiseRequest that EventBus.raise sends for `event` and its options (params,
// positional, json, sync, timeoutMs, allDeliveries): also one event of a RaiseStream message.
function raiseRequest(event, {params, positional, json, sync, timeoutMs, allDeliveries} = {}) {
  const request = {event, sync, timeoutMs, allDeliveries};
  if (params !== undefined) request.named = namedParams(params);
  if (positional !== undefined) request.positional = {values: positional};
  if (json !== undefined) request.json = json;
  return request;
}

// An error as @grpc/grpc-js makes them: `code` (grpc.status), `details`, and the message
// "3 INVALID_ARGUMENT: details".
function statusError(code, details) {
  return Object.assign(new Error(`${code} ${grpc.status[code]}: ${details}`), {code, details});
}

// One RaiseStream call (EventBus.raiseStream). send(events) sends one message; iterating the
// stream (for await) yields one result per event, in the order sent: {message, index, event,
// response} (message: its message's number on the stream, from 0; index: its place in the
// message; event: the request sent; response: what Raise would have answered) or, for an event
// the server refused, {message, index, event, error} with error as a call's (`code`, e.g.
// grpc.status.INVALID_ARGUMENT, and `details` naming the index: 'event [1]: ...'). end()
// half-closes: the iteration ends once every event is answered. A failure of the call itself
// (UNAUTHENTICATED, UNAVAILABLE when the server is gone, DEADLINE_EXCEEDED, ...) is thrown by the
// iteration after the results before it, and rejects a pending send. Leaving the loop early
// (break, throw) cancels the call, as cancel() does.
class RaiseStream {
  constructor(call) {
    this.call = call;
    this.sent = [];  // {message, events} of each message sent and not yet answered, oldest first
    this.messages = 0;
    this.error = null;
    this.cancelled = false;
    // Kept here so that a failure with nobody iterating is not an unhandled 'error' event; the
    // iteration and send() still see it.
    call.on('error', (err) => { this.error = err; });
  }

  // Sends `events` as one message, each {event, params, positional, json, sync, timeoutMs,
  // allDeliveries}: an event and its options as raise() takes them, built as raise() builds them.
  // Resolves once gRPC has taken it: await it to let the server's flow control pace the sender.
  // Rejects with the call's error once the call has failed.
  send(events) {
    const requests = events.map(({event, ...options}) => raiseRequest(event, options));
    if (this.error) return Promise.reject(this.error);
    if (this.cancelled || this.call.destroyed) {  // cancel(), or a loop over it was left early
      return Promise.reject(statusError(grpc.status.CANCELLED, 'raise stream: cancelled'));
    }
    if (this.call.writableEnded) return Promise.reject(new Error('raise stream: send after end()'));
    // Recorded before it is written: its answer may come before the write completes.
    this.sent.push({message: this.messages++, events: requests});
    return new Promise((resolve, reject) => {
      this.call.write({events: requests}, (err) => (err ? reject(this.error || err) : resolve()));
    });
  }

  // Tells the server that no more messages follow; it answers what it has, then ends the call.
  end() {
    this.call.end();
  }

  // Abandons the call: the iteration throws CANCELLED unless it is over.
  cancel() {
    this.cancelled = true;
    this.call.cancel();
  }

  async* [Symbol.asyncIterator]() {
    let over = false;
    try {
      for await (const answer of this.call) {
        const {message, events} = this.sent.shift();
        const results = answer.results || [];
        if (results.length !== events.length) {
          throw new Error(`raise stream: message ${message} of ${events.length} event(s) got ` +
                          `${results.length} result(s)`);
        }
        for (let index = 0; index < results.length; index++) {
          const r = results[index];
          const result = {message, index, event: events[index]};
          if (r.response) result.response = r.response;
          else result.error = statusError(r.error.code || 0, r.error.message || '');
          yield result;
        }
      }
      over = true;
    } finally {
      // Left early (break, throw): the loop has destroyed the Node stream, but grpc-js does not
      // end the call for that; cancel it so the server drops it too.
      if (!over) this.cancel();
    }
    if (this.error) throw this.error;
  }
}

// A connection to one EventBus server; every call has a deadline (timeoutMs). Calls return
// promises; errors carry the gRPC `code` (grpc.status.INVALID_ARGUMENT, ...) and `details`.
class EventBus {
  constructor(address, {timeoutMs = 10000, Service = loadService()} = {}) {
    this.client = new Service(address, grpc.credentials.createInsecure());
    this.timeoutMs = timeoutMs;
  }

  close() {
    this.client.close();
  }

  call(method, request, extraMs = 0) {
    const deadline = new Date(Date.now() + this.timeoutMs + extraMs);
    return new Promise((resolve, reject) => {
      this.client[method](request, {deadline}, (err, reply) => (err ? reject(err) : resolve(reply)));
    });
  }

  // Resolves to the SubscribeResponse ({subscription, created}).
  subscribe(event, socket, {expireSeconds, eventParam} = {}) {
    return this.call('Subscribe', {event, socket, expireSeconds, eventParam});
  }

  // Removes by {id} or by {event, socket}; resolves to how many were removed (0 is fine).
  async unsubscribe({id = '', event = '', socket = ''}) {
    return (await this.call('Unsubscribe', {id, event, socket})).removed;
  }

  // Raises `event` with at most one of params (object or [name, value] pairs), positional (an
  // array of google.protobuf.Value objects) or json (text). Resolves to the RaiseResponse: an
  // async one lists only the deliveries that are not QUEUED (see its counts) unless allDeliveries.
  raise(event, options = {}) {
    return this.call('Raise', raiseRequest(event, options), options.timeoutMs || 0);
  }

  // Opens a RaiseStream call (see RaiseStream); deadlineMs: the whole stream's, none by default.
  raiseStream({deadlineMs} = {}) {
    const options = deadlineMs === undefined ? {} : {deadline: new Date(Date.now() + deadlineMs)};
    return new RaiseStream(this.client.RaiseStream(options));
  }

  // Resolves to one page, a ListSubscriptionsResponse ({subscriptions, stale, nextPageToken}:
  // empty on the last page). pageSize 0: the server's default (1000).
  listSubscriptions(event = '', {pageSize = 0, pageToken = ''} = {}) {
    return this.call('ListSubscriptions', {event, pageSize, pageToken});
  }

  // Yields every page of ListSubscriptions, one call (and one deadline) per page.
  async* subscriptionPages(event = '', {pageSize = 0} = {}) {
    let pageToken = '';
    do {
      const page = await this.listSubscriptions(event, {pageSize, pageToken});
      yield page;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  // Resolves to one page, a ListEventsResponse ({events: [{event, subscribers}], stale,
  // nextPageToken}).
  listEvents({pageSize = 0, pageToken = ''} = {}) {
    return this.call('ListEvents', {pageSize, pageToken});
  }

  // Yields every page of ListEvents.
  async* eventPages({pageSize = 0} = {}) {
    let pageToken = '';
    do {
      const page = await this.listEvents({pageSize, pageToken});
      yield page;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }
}

const strip = (prefix) => (name) => String(name).replace(prefix, '');
const statusName = strip('DELIVERY_STATUS_');
const stateName = strip('CONNECTION_STATE_');

function durationMs(d) {
  return d ? Number(d.seconds || 0) * 1e3 + (d.nanos || 0) / 1e6 : 0;
}

// One line per target: socket, status, latency, then the result or the error.
function formatDelivery(d) {
  let line = `${d.socket}  ${statusName(d.status)}  ${durationMs(d.latency).toFixed(2)} ms`;
  if (d.status === 'DELIVERY_STATUS_OK' && d.result) line += `  ${d.result}`;
  else if (d.status === 'DELIVERY_STATUS_RPC_ERROR') line += `  error ${d.error.code} ${d.error.message}`;
  else if (d.detail) line += `  ${d.detail}`;
  return line;
}

module.exports = {
  EventBus, RaiseStream, LOADER_OPTIONS, loadService, param, namedParams, raiseRequest, toJson,
  formatDelivery, statusName, stateName, durationMs, grpc,
};
