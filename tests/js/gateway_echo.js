// Drives the gateway's "/echo" test namespace with the real socket.io-client.
// Usage: node gateway_echo.js URL TOKEN TRANSPORTS(websocket|default) SCENARIO
// Prints one JSON line per observation; exits 0 when the scenario completed.
const { io } = require("socket.io-client");

const [url, token, transports, scenario] = process.argv.slice(2);
const options = { path: "/sockets/", auth: { token }, reconnectionDelay: 100, reconnectionDelayMax: 200 };
if (transports === "websocket") options.transports = ["websocket"];
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const fail = (why) => { say({ fail: String(why) }); process.exit(1); };
setTimeout(() => fail("timeout"), 15000);

const socket = io(url + "/echo", options);
let firstTransport = null;
socket.io.on("open", () => { firstTransport = firstTransport || socket.io.engine.transport.name; });
socket.on("connect_error", (err) => say({ connect_error: err.message, data: err.data }));

async function basic() {
  await new Promise((resolve) => socket.once("connect", resolve));
  say({ connected: true, transport: firstTransport, recovered: socket.recovered });
  say({ echo: await socket.emitWithAck("echo", { n: 1, text: "héllo" }) });
  say({ who: await socket.emitWithAck("whoami", {}) });
  say({ unknown: await socket.emitWithAck("nope", {}) });
  say({ join: await socket.emitWithAck("join", {}) });
  const shouted = new Promise((resolve) => socket.once("shouted", (payload) => resolve(payload)));
  socket.emit("shout", { text: "to all" }); // no ack
  say({ shouted: await shouted });
  // Wait for the upgrade when polling started the session.
  for (let i = 0; i < 50 && socket.io.engine.transport.name !== "websocket"; i++) {
    await new Promise((r) => setTimeout(r, 50));
  }
  say({ final_transport: socket.io.engine.transport.name });
  socket.disconnect();
  say({ done: true });
  process.exit(0);
}

async function recover() {
  await new Promise((resolve) => socket.once("connect", resolve));
  const firstId = socket.id;
  await socket.emitWithAck("join", {});
  const seen = [];
  socket.on("shouted", (payload) => seen.push(payload.n));
  // Ask the test to cut our TCP connection, then to shout while we are away.
  say({ ready: firstId });
  await new Promise((resolve) => socket.io.once("reconnect", resolve));
  await new Promise((r) => setTimeout(r, 300));
  say({ reconnected: true, recovered: socket.recovered, sameId: socket.id === firstId, seen });
  socket.disconnect();
  process.exit(0);
}

async function refused() {
  const err = await new Promise((resolve) => socket.once("connect_error", resolve));
  say({ refused: err.message, data: err.data });
  process.exit(0);
}

({ basic, recover, refused })[scenario]().catch(fail);
