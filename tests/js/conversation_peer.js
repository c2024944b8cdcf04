// A /conversation participant with the real npm socket.io-client.
// Usage: node conversation_peer.js URL TOKEN USER_ID
// Prints one JSON line per server event ({event, payload}); answers every
// `offer` with an acked `answer` to its sender (the ack is printed). Runs until killed.
const { io } = require("socket.io-client");

const [url, token, me] = process.argv.slice(2);
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const EVENTS = ["session-state", "participant-joined", "participant-left",
  "media-state-changed", "session-started", "session-ended", "reminder", "offer", "answer",
  "ice-candidate"];

const socket = io(url + "/conversation", {
  path: "/sockets/", auth: { token }, reconnection: false, transports: ["websocket"],
});
socket.on("connect_error", (err) => { say({ fail: err.message, data: err.data }); process.exit(1); });
socket.on("connect", () => say({ connected: true }));
for (const name of EVENTS) {
  socket.on(name, async (payload) => {
    say({ event: name, payload });
    if (name === "offer") {
      const ack = await socket.emitWithAck("answer",
        { toUserId: payload.fromUserId, sdp: `answer-from-${me}` });
      say({ answered: ack });
    }
  });
}
setTimeout(() => { say({ fail: "timeout" }); process.exit(1); }, 60000);
