/**
 * Scheduled jobs, with agenda and its MongoDB backend: for now the retention job (jobs/retention.ts), every
 * RETENTION_INTERVAL_MINUTES; agenda's lock makes one node run it at a time when several cloud nodes share the
 * database.
 *
 * Agenda connects inside its constructor, and an unreachable database there becomes an unhandled rejection
 * (ARCHITECTURE "Package pins"): so the backend is connected here first, where a failure is an ordinary error of
 * startJobs, and agenda is handed a backend that is already connected. Agenda gets its own connection (its own
 * MongoClient on the cloud's MONGO_URL, closed by stop()) and its own collection, `agenda_jobs`.
 */
import { MongoBackend } from '@agendajs/mongo-backend';
import { Agenda } from 'agenda';
import { MongoClient, type Collection, type Db } from 'mongodb';
import type { Clock } from '../../../tools/runtime/clock.ts';
import type { Logger } from '../../../tools/runtime/logger.ts';
import type { JobsConfig } from './config.ts';
import { runRetention, type RetentionResult } from './retention.ts';

export const RETENTION_JOB = 'retention';
export const JOBS_COLLECTION = 'agenda_jobs';

export interface Jobs {
  readonly agenda: Agenda;
  /**
   * Defines a repeating job of another domain (e.g. finishing pending GDPR deletions) and schedules it every
   * `everyMinutes`, keeping an existing schedule across restarts. A failed run is logged; it runs again next time.
   * `lockLifetimeMs`: how long a node may hold this job before another may take it (default: startJobs'
   * lockLifetimeMs).
   */
  repeat(
    name: string,
    everyMinutes: number,
    run: () => Promise<void>,
    options?: { lockLifetimeMs?: number },
  ): Promise<void>;
  /** Runs the retention job now through agenda and resolves when it finished (rejects if it failed). */
  runRetentionNow(timeoutMs?: number): Promise<RetentionResult>;
  /** Stops taking jobs (running ones are unlocked for another node) and closes agenda's connection. */
  stop(): Promise<void>;
}

export async function startJobs({
  mongoUrl,
  db,
  clock,
  log,
  config,
  connectTimeoutMs,
  lockLifetimeMs = 10 * 60_000,
}: {
  /** Agenda's own connection (the database named in the URL). */
  mongoUrl: string;
  /** The cloud's connection, for the jobs' own reads and writes. */
  db: Db;
  clock: Clock;
  log: Logger;
  config: JobsConfig;
  connectTimeoutMs: number;
  /**
   * How long a node may hold a job before another may take it. Agenda 6.2.6 leaves a timer of half this running
   * after every job run (its lock watchdog, `checkIfJobIsStillAlive`, is never cleared); it no longer keeps the
   * process alive (releaseRunWatchdogs).
   */
  lockLifetimeMs?: number;
}): Promise<Jobs> {
  // Our own client rather than the backend's `address` option: a failed MongoClient.connect() inside the backend
  // was left with its monitors running (the test process never exited); this one is closed on every path.
  const client = new MongoClient(mongoUrl, { serverSelectionTimeoutMS: connectTimeoutMs, maxPoolSize: 5 });
  const backend = new MongoBackend({ mongo: client.db(), collection: JOBS_COLLECTION });
  try {
    await client.connect();
    await backend.connect();
  } catch (err) {
    await client.close();
    throw err;
  }
  const connected = new Proxy(backend, {
    get(target, prop) {
      if (prop === 'connect') return () => Promise.resolve();
      const value: unknown = Reflect.get(target, prop);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
  const agenda = new Agenda({
    backend: connected,
    name: 'nxg-cloud',
    // Milliseconds as a number: a string such as '300 milliseconds' was read as 300,000 ms.
    processEvery: config.pollIntervalMs,
    defaultLockLifetime: lockLifetimeMs,
  });
  agenda.on('error', (err: Error) =>
    log.error({ err: { name: err.name, message: err.message } }, 'job scheduler error'),
  );

  let lastResult: RetentionResult | undefined;
  agenda.define(RETENTION_JOB, async () => {
    lastResult = await runRetention({
      db,
      clock,
      settings: {
        telemetryRetentionDays: config.telemetryRetentionDays,
        deadLetterRetentionDays: config.deadLetterRetentionDays,
      },
    });
    log.info(
      { telemetryBuckets: lastResult.telemetryBuckets, deadLetters: lastResult.deadLetters },
      'retention: old telemetry and dead letters deleted',
    );
  });
  agenda.on(`fail:${RETENTION_JOB}`, (err: Error) =>
    log.warn({ err: { name: err.name, message: err.message } }, 'retention job failed; it runs again next interval'),
  );

  try {
    await agenda.start();
    // start() made the job processor; its first run needs a database round trip yet, so none ran before this.
    releaseRunWatchdogs(agenda, log);
    await scheduleEvery(
      agenda,
      client.db().collection(JOBS_COLLECTION),
      RETENTION_JOB,
      config.retentionIntervalMinutes,
    );
  } catch (err) {
    await agenda.stop().catch(() => undefined);
    await client.close();
    throw err;
  }
  log.info({ everyMinutes: config.retentionIntervalMinutes }, 'scheduled jobs started');

  return {
    agenda,
    async repeat(name, everyMinutes, run, options) {
      agenda.define(name, run, options?.lockLifetimeMs ? { lockLifetime: options.lockLifetimeMs } : undefined);
      agenda.on(`fail:${name}`, (err: Error) =>
        log.warn({ job: name, err: { name: err.name, message: err.message } }, 'job failed; it runs again next time'),
      );
      await scheduleEvery(agenda, client.db().collection(JOBS_COLLECTION), name, everyMinutes);
    },
    async runRetentionNow(timeoutMs = 30_000) {
      let timer: NodeJS.Timeout | undefined;
      let onComplete: (() => void) | undefined;
      let onFail: ((err: Error) => void) | undefined;
      const finished = new Promise<RetentionResult>((resolve, reject) => {
        onComplete = () =>
          lastResult ? resolve(lastResult) : reject(new Error('retention finished without a result'));
        onFail = reject;
        agenda.once(`success:${RETENTION_JOB}`, onComplete);
        agenda.once(`fail:${RETENTION_JOB}`, onFail);
        timer = setTimeout(() => reject(new Error(`retention did not finish within ${timeoutMs} ms`)), timeoutMs);
      });
      try {
        lastResult = undefined;
        await agenda.now(RETENTION_JOB);
        return await finished;
      } finally {
        clearTimeout(timer);
        if (onComplete) agenda.off(`success:${RETENTION_JOB}`, onComplete);
        if (onFail) agenda.off(`fail:${RETENTION_JOB}`, onFail);
      }
    },
    async stop() {
      try {
        await agenda.stop();
      } finally {
        await client.close();
      }
      log.info('scheduled jobs stopped');
    },
  };
}

/**
 * Agenda 6.2.6 arms a lock watchdog for every job run (JobProcessor.runOrRetry → checkIfJobIsStillAlive: a
 * setTimeout of lockLifetime / 2, 5 minutes by default, re-armed while the job runs) and never clears it, not even in
 * stop(): a process that ran a job stays alive that long after stop() (a test process with in-process clouds did
 * not exit). The timers agenda arms while it starts a run — synchronously, inside runOrRetry: the watchdog's first
 * one — are unref'd here: they still fire while the process lives, they just no longer keep it alive by themselves
 * (while the cloud runs, its servers and connections do). Only a run longer than lockLifetime / 2 re-arms a
 * referenced one, as short. Checked by jobs.test.ts; remove once agenda clears its own timers.
 */
function releaseRunWatchdogs(agenda: Agenda, log: Logger): void {
  type RunOrRetry = (this: unknown, job: unknown) => Promise<void>;
  const processor = (agenda as unknown as { jobProcessor?: { runOrRetry?: RunOrRetry } }).jobProcessor;
  const runOrRetry = processor?.runOrRetry;
  if (!processor || typeof runOrRetry !== 'function') {
    log.warn('agenda has no JobProcessor.runOrRetry (a new agenda version?): its run watchdogs stay referenced');
    return;
  }
  processor.runOrRetry = function (job) {
    const setTimeoutRef = globalThis.setTimeout;
    globalThis.setTimeout = ((...args: Parameters<typeof setTimeoutRef>) =>
      setTimeoutRef(...args).unref()) as unknown as typeof setTimeoutRef;
    try {
      return runOrRetry.call(processor, job);
    } finally {
      globalThis.setTimeout = setTimeoutRef;
    }
  };
}

/**
 * Schedules a repeating job once. The first run is one interval after it is first scheduled (a start, or a test,
 * does not pay for a full pass); a restart keeps the schedule it finds — `agenda.every` would push the next run
 * back by a whole interval on every start, so a cloud restarted more often than that would never run it. A changed
 * interval reschedules it.
 */
async function scheduleEvery(agenda: Agenda, jobs: Collection, name: string, everyMinutes: number): Promise<void> {
  const intervalMs = everyMinutes * 60_000;
  const existing = await jobs.findOne({ name, type: 'single' }, { projection: { repeatInterval: 1 } });
  if (existing && Number(existing.repeatInterval) === intervalMs) return;
  await agenda.every(intervalMs, name, undefined, { skipImmediate: true });
}
