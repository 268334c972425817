/**
 * The bounded queue between the broker and the MongoDB writers.
 *
 * Aedes calls a subscription handler and waits for its callback before it reads that client's next packets and
 * frees one of its (by default 100) delivery slots: a handler that holds its callback while MongoDB is slow stalls
 * the gateway's connection — and, if enough are held, the whole broker. So a batch is accepted at once while the
 * queue has room (callback at once); when it is full the callback is held (backpressure on the sender) for at
 * most `holdMs`, after which the batch is dropped unanswered (`onShed`) and the gateway resends it later; at most
 * `maxHeld` senders are held at once, the others are dropped at once. Nothing waits forever.
 *
 * Work runs at most `concurrency` at a time, and one at a time per key (a gateway's lane), so a lane's batches are
 * written in the order they came and one busy lane cannot take every writer. With `priority`, a free writer takes
 * the runnable key of the lowest priority first (ties in arrival order): a gateway's door decisions and records are
 * not left behind its telemetry backlog when MongoDB cannot keep up with everything.
 */
export interface WorkQueueOptions<T> {
  concurrency: number;
  maxQueued: number;
  holdMs: number;
  /**
   * Most senders held at once; beyond it a batch is shed at once. Each held callback keeps one of Aedes' delivery
   * slots (mqemitter concurrency, 100 by default), and the acks ingest publishes need free slots too: holding many
   * could stall the broker until `holdMs` runs out.
   */
  maxHeld: number;
  /** Must not throw; its rejection is ignored (report errors inside it). */
  work: (item: T) => Promise<void>;
  /** A key's priority, lower first (default: all equal, first come first served). */
  priority?: (key: string) => number;
  /** A batch dropped because the queue stayed full (or is closed). */
  onShed: (item: T) => void;
}

export interface WorkQueue<T> {
  /** Takes an item; `accepted` is called once, when it is queued or shed (never later than `holdMs`). */
  offer(key: string, item: T, accepted: () => void): void;
  /** Items waiting (not running). */
  readonly queued: number;
  readonly running: number;
  /** Items held because the queue was full. */
  readonly held: number;
  /** Stops taking items (new and held ones are shed) and resolves when the running and queued work is done. */
  close(): Promise<void>;
}

interface Held<T> {
  key: string;
  item: T;
  accepted: () => void;
  timer: NodeJS.Timeout;
}

export function createWorkQueue<T>(options: WorkQueueOptions<T>): WorkQueue<T> {
  const lanes = new Map<string, { items: T[]; running: boolean }>();
  const ready: string[] = [];
  const holding: Held<T>[] = [];
  let queued = 0;
  let running = 0;
  let closed = false;
  let idle: (() => void) | undefined;

  const enqueue = (key: string, item: T) => {
    let lane = lanes.get(key);
    if (!lane) {
      lane = { items: [], running: false };
      lanes.set(key, lane);
    }
    lane.items.push(item);
    queued += 1;
    if (!lane.running && lane.items.length === 1) ready.push(key);
  };

  const admitHeld = () => {
    while (holding.length > 0 && queued < options.maxQueued) {
      const held = holding.shift()!;
      clearTimeout(held.timer);
      enqueue(held.key, held.item);
      held.accepted();
    }
  };

  const priority = options.priority;
  /** The next runnable key: the first of the lowest priority (`ready` holds a few keys per gateway at most). */
  const takeReady = (): string => {
    if (!priority) return ready.shift()!;
    let best = 0;
    let bestPriority = priority(ready[0]!);
    for (let i = 1; i < ready.length; i++) {
      const p = priority(ready[i]!);
      if (p < bestPriority) {
        best = i;
        bestPriority = p;
      }
    }
    return ready.splice(best, 1)[0]!;
  };

  const pump = () => {
    while (running < options.concurrency && ready.length > 0) {
      const key = takeReady();
      const lane = lanes.get(key)!;
      const item = lane.items.shift()!;
      queued -= 1;
      running += 1;
      lane.running = true;
      // Room was made: a held batch may come in (and become runnable in this same loop).
      if (!closed) admitHeld();
      void options
        .work(item)
        .catch(() => undefined)
        .finally(() => {
          running -= 1;
          lane.running = false;
          if (lane.items.length > 0) ready.push(key);
          else lanes.delete(key);
          pump();
          if (running === 0 && queued === 0) idle?.();
        });
    }
  };

  return {
    offer(key, item, accepted) {
      if (closed) {
        options.onShed(item);
        accepted();
        return;
      }
      if (queued < options.maxQueued && holding.length === 0) {
        enqueue(key, item);
        accepted();
        pump();
        return;
      }
      if (holding.length >= options.maxHeld) {
        options.onShed(item);
        accepted();
        return;
      }
      const held: Held<T> = {
        key,
        item,
        accepted,
        timer: setTimeout(() => {
          const i = holding.indexOf(held);
          if (i >= 0) holding.splice(i, 1);
          options.onShed(item);
          accepted();
        }, options.holdMs),
      };
      holding.push(held);
    },
    get queued() {
      return queued;
    },
    get running() {
      return running;
    },
    get held() {
      return holding.length;
    },
    close() {
      closed = true;
      for (const held of holding.splice(0)) {
        clearTimeout(held.timer);
        options.onShed(held.item);
        held.accepted();
      }
      if (running === 0 && queued === 0) return Promise.resolve();
      return new Promise<void>((resolve) => {
        idle = resolve;
      });
    },
  };
}
