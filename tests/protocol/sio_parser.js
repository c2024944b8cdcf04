// Drives npm's socket.io-parser (the codec inside socket.io-client) for
// tests/protocol/test_interop_js.py. stdin: a JSON array of
// {"decode": "<socket.io text>"} or {"encode": {type, nsp, data, id}};
// stdout: a JSON array of decoded packets / encoded texts (or {"error": ...}).
"use strict";
const path = require("path");
const { Decoder, Encoder } = require(
  path.join(__dirname, "..", "js", "node_modules", "socket.io-parser"),
);

let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const encoder = new Encoder();
  const out = JSON.parse(input).map((job) => {
    try {
      if ("decode" in job) {
        let packet = null;
        const decoder = new Decoder();
        decoder.on("decoded", (p) => (packet = p));
        decoder.add(job.decode);
        return packet;
      }
      const frames = encoder.encode(job.encode);
      return frames.length === 1 ? frames[0] : { error: "binary" };
    } catch (err) {
      return { error: String(err.message || err) };
    }
  });
  process.stdout.write(JSON.stringify(out));
});
