// The Node peer of bench/gateway_bench.py: the same "/bench" namespace on socket.io.
//
//     (cd bench/peers/node && npm install) ; node bench/peers/node/server.js
//
// socket.io 4 as usually deployed: one process, WebSocket transport only,
// Socket.IO at /sockets/ like the daemon. Binds a free port on 127.0.0.1,
// prints it on stdout and serves until killed (or until its stdin closes,
// which is when the bench that started it is gone).
//
// Same events and answers as bench/gateway_bench_server.py: `join {room}`
// enters the room and acks {members}; `say {room, ...}` emits `said` with the
// payload, unchanged, to the room (the sender is not a member) and acks.
"use strict";

const http = require("http");
const { Server } = require("socket.io");

const httpServer = http.createServer();
const io = new Server(httpServer, { path: "/sockets/", transports: ["websocket"], serveClient: false });
const members = new Map();

io.of("/bench").on("connection", (socket) => {
  socket.on("join", (payload, ack) => {
    socket.join(payload.room);
    const n = (members.get(payload.room) || 0) + 1;
    members.set(payload.room, n);
    if (ack) ack({ status: "SUCCESS", data: { members: n } });
  });
  socket.on("say", (payload, ack) => {
    io.of("/bench").to(payload.room).emit("said", payload);
    if (ack) ack({ status: "SUCCESS", data: {} });
  });
});

httpServer.listen(0, "127.0.0.1", 4096, () => {
  process.stdout.write(`${httpServer.address().port}\n`);
});
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
