// Where commands write their answer: stdout, waiting until the text is
// handed over (a pipe may accept it asynchronously and the process exits next).
export type Out = (text: string) => Promise<void>;

export const stdoutOut: Out = (text) => new Promise((resolve, reject) => {
  process.stdout.write(text.endsWith('\n') || text === '' ? text : text + '\n', (err) => (err ? reject(err) : resolve()));
});
