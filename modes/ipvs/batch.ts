// One batch of lines for one tool (`ipvsadm -R`, `ipset restore`, `ip
// -batch -`). Commands are validated as they are added; the first error is
// kept and later adds are ignored, so a caller checks once before sending.

export interface LineModel<C> {
  /** Throws when the command could not be a valid line. */
  validate(cmd: C): void;
  /** The line of an already validated command. */
  renderValid(cmd: C): string;
}

export class LineBatch<C> {
  readonly commands: C[] = [];
  private readonly model: LineModel<C>;
  private firstError: Error | undefined;

  constructor(model: LineModel<C>) {
    this.model = model;
  }

  add(cmd: C): this {
    if (this.firstError) return this;
    try {
      this.model.validate(cmd);
      this.commands.push(cmd);
    } catch (e) {
      this.firstError = e as Error;
    }
    return this;
  }

  /** Adds a command the caller has validated already (with the model's validate). */
  addChecked(cmd: C): this {
    if (!this.firstError) this.commands.push(cmd);
    return this;
  }

  get error(): Error | undefined {
    return this.firstError;
  }

  get size(): number {
    return this.commands.length;
  }

  /** The exact batch: one line per command, each ending in a newline. */
  toString(): string {
    if (this.commands.length === 0) return '';
    return this.commands.map((c) => this.model.renderValid(c)).join('\n') + '\n';
  }
}
