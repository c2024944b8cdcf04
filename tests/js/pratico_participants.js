// N Pratico participants with the real npm socket.io-client, one connection each.
// Usage: node pratico_participants.js URL ROOM_NAME COUNT NAME_PREFIX
// Each joins by link name, follows pages, answers the quiz it is shown (choice
// = its index % 2), the first one chats after the quiz closes, and at
// `session_ended` each prints a summary line. Exits 0 once all are done.
const { io } = require("socket.io-client");

const [url, roomName, countText, prefix] = process.argv.slice(2);
const count = Number(countText);
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const fail = (why) => { say({ fail: String(why) }); process.exit(1); };
setTimeout(() => fail("timeout"), 60000);

let finished = 0;

function participant(i) {
  const options = { path: "/sockets/", forceNew: true, reconnection: false };
  // Half start on WebSocket, half with the Socket.IO default (polling, then upgrade).
  if (i % 2 === 0) options.transports = ["websocket"];
  const socket = io(url + "/pratico", options);
  const seen = { name: `${prefix}${i}`, pages: [], chats: [], leaked_correct: false,
                 answer: null, closed: null, scores: null, ended: null, joined: [] };
  let firstTransport = null;
  socket.io.on("open", () => { firstTransport = firstTransport || socket.io.engine.transport.name; });
  socket.on("connect_error", (err) => fail(`connect_error ${err.message}`));
  socket.on("page_changed", (p) => seen.pages.push(p.page));
  socket.on("participant_joined", (p) => seen.joined.push(p.participant_id));
  socket.on("chat_message", (m) => seen.chats.push(m.text));
  socket.on("scores_updated", (s) => { seen.scores = s.scores; });
  socket.on("quiz_launched", async (quiz) => {
    seen.leaked_correct = quiz.questions.some((q) => "correct" in q);
    const q = quiz.questions[0];
    seen.answer = await socket.emitWithAck("answer_quiz",
      { quiz_id: quiz.quiz_id, question_id: q.id, choice: i % 2 });
    seen.second = await socket.emitWithAck("answer_quiz",
      { quiz_id: quiz.quiz_id, question_id: q.id, choice: 0 });
  });
  socket.on("quiz_closed", async (closed) => {
    seen.closed = closed;
    if (i === 0) seen.chat = await socket.emitWithAck("chat_send", { text: `hello from ${prefix}` });
  });
  socket.on("session_ended", (p) => { seen.ended = p; });
  socket.on("disconnect", (reason) => {
    seen.disconnect = reason;
    say({ summary: seen });
    finished += 1;
    if (finished === count) process.exit(0);
  });
  socket.on("connect", async () => {
    const reply = await socket.emitWithAck("join", { room: roomName, display_name: seen.name });
    if (reply.status !== "SUCCESS") fail(JSON.stringify(reply));
    seen.pid = reply.data.participant_id;
    say({ joined: seen.pid, name: seen.name, token: reply.data.guest_token,
          transport: firstTransport });
  });
}

for (let i = 0; i < count; i++) participant(i);
