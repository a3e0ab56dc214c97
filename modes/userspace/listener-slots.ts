// The small integer ids the native relays know listeners by: reused once
// closed, so the addon's tables stay as small as the number of listeners.
export class ListenerSlots<L> {
  readonly #free: number[] = [];
  #next = 0;
  readonly #byId = new Map<number, L>();

  /** Gives `l` a free id and runs `open(id)`; the id goes back when `open` throws. */
  open(l: L, open: (id: number) => void): number {
    const id = this.#free.pop() ?? this.#next++;
    try {
      open(id);
    } catch (e) {
      this.#free.push(id);
      throw e;
    }
    this.#byId.set(id, l);
    return id;
  }

  /** Runs `close(id)` and frees the id. */
  close(id: number, close: (id: number) => void): void {
    close(id);
    this.#byId.delete(id);
    this.#free.push(id);
  }

  get(id: number): L | undefined {
    return this.#byId.get(id);
  }
}
