// Exponential backoff for retrying a failed list/watch: initial, doubling up
// to a cap, back to initial after a success. A little jitter keeps the
// agents of many nodes from reconnecting to a recovering API server in step.

export class Backoff {
  readonly #initialMs: number;
  readonly #maxMs: number;
  readonly #jitter: number;
  #stepMs: number;

  constructor(initialMs: number, maxMs: number, jitter = 0.2) {
    if (!(initialMs > 0) || !(maxMs >= initialMs)) {
      throw new RangeError(`backoff needs 0 < initialMs <= maxMs (got ${initialMs}, ${maxMs})`);
    }
    this.#initialMs = initialMs;
    this.#maxMs = maxMs;
    this.#jitter = jitter;
    this.#stepMs = initialMs;
  }

  /** The delay before the next attempt; each call moves one step up. */
  next(): number {
    const step = this.#stepMs;
    this.#stepMs = Math.min(step * 2, this.#maxMs);
    // Jitter only shortens a step, so the cap holds.
    return Math.round(step * (1 - this.#jitter * Math.random()));
  }

  reset(): void {
    this.#stepMs = this.#initialMs;
  }
}
