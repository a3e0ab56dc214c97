// A child process script for the datapath benchmarks: connects again and
// again (each a new connection, so each is a fresh DNAT or IPVS decision)
// and prints "<epoch ms> <answer or !error>" per attempt.
export const proberScript = String.raw`
const net = require('node:net');
const a = JSON.parse(process.env.KP_ARGS);
let stop = false;
process.stdin.on('data', () => {});
process.stdin.on('end', () => { stop = true; });
function once() {
  return new Promise((done) => {
    let buf = '', finished = false;
    const s = net.connect({ host: a.host, port: a.port });
    const fin = (what) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      s.destroy();
      process.stdout.write(Date.now() + ' ' + what + '\n');
      done();
    };
    const timer = setTimeout(() => fin('!TIMEOUT'), a.timeoutMs);
    s.setEncoding('utf8');
    s.on('data', (d) => { buf += d; });
    s.on('end', () => fin(buf.trim() || '!EMPTY'));
    s.on('error', (e) => fin('!' + (e.code || 'ERROR')));
  });
}
(async () => {
  process.stdout.write('0 started\n');
  while (!stop) { await once(); await new Promise((r) => setTimeout(r, a.intervalMs)); }
})();
`;

/** One line of the prober: when the attempt ended, and the backend that answered or "!ERROR". */
export interface Answer { readonly at: number; readonly what: string }

/** Epoch ms of the first answer from `want` at or after `since` that only `want` follows (`consistent` of them in a row). */
export function programmedAt(answers: readonly Answer[], since: number, want: string, consistent: number): number | undefined {
  let from = answers.findIndex((a) => a.at >= since);
  if (from < 0) return undefined;
  for (let i = from; i < answers.length; i++) {
    if (answers[i].what !== want) { from = i + 1; continue; }
    if (i - from + 1 >= consistent) return answers[from].at;
  }
  return undefined;
}
