// One /classroom Socket.IO client (npm socket.io-client) driven by the Python tests.
// Usage: node classroom_client.js URL
// Reads JSON commands from stdin, one per line:
//   {"op":"connect","query":{...},"auth":{...}}  {"op":"emit","event":E,"payload":P}
//   {"op":"close"}  {"op":"exit"}
// Prints one JSON line per observation: connected, connect_error, event, ack, disconnected.
const { io } = require("socket.io-client");
const readline = require("readline");

const [url] = process.argv.slice(2);
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
let socket = null;

function connect({ query, auth }) {
  socket = io(url + "/classroom", {
    path: "/sockets/", query: query || {}, auth: auth || {}, transports: ["websocket"],
    reconnection: false, forceNew: true,
  });
  socket.on("connect", () => say({ connected: true, id: socket.id }));
  socket.on("connect_error", (err) => say({ connect_error: err.message, data: err.data || null }));
  socket.on("disconnect", (reason) => say({ disconnected: reason }));
  socket.onAny((event, payload) => say({ event, payload }));
}

async function emit({ event, payload }) {
  try {
    say({ ack: event, reply: await socket.timeout(10000).emitWithAck(event, payload) });
  } catch (err) {
    say({ ack: event, error: String(err) });
  }
}

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  const command = JSON.parse(line);
  if (command.op === "connect") connect(command);
  else if (command.op === "emit") emit(command);
  else if (command.op === "close") { socket.disconnect(); say({ closed: true }); }
  else if (command.op === "exit") process.exit(0);
});
lines.on("close", () => process.exit(0));
setTimeout(() => { say({ fail: "timeout" }); process.exit(1); }, 60000);
