import { expect } from 'chai';
import { createHook } from 'node:async_hooks';
import type { Connection } from 'mongoose';
import { pino } from 'pino';
import { createManualClock } from '../../../tools/runtime/clock.ts';
import { connectMongoose, testServices, uniqueDbName } from '../../../test/helpers/services.ts';
import {
  DEAD_LETTER_COLLECTION,
  TELEMETRY_BUCKET_MS,
  TELEMETRY_COLLECTION,
  ensureIngestCollections,
} from '../ingest/store.ts';
import { JOBS_COLLECTION, RETENTION_JOB, startJobs, type Jobs } from './jobs.ts';
import { DAY_MS, runRetention } from './retention.ts';

const NOW = Date.UTC(2026, 10, 26, 12, 0, 0);

describe('scheduled jobs: telemetry and dead-letter retention (agenda on the MongoDB stand-in)', function () {
  this.timeout(30_000);
  const clock = createManualClock(NOW);
  let dbName: string;
  let mongo: Connection;

  before(async () => {
    dbName = uniqueDbName('jobs');
    mongo = await connectMongoose(dbName);
    await ensureIngestCollections(mongo.db!);
  });
  after(async () => {
    await mongo.dropDatabase();
    await mongo.close();
  });

  /** What every startJobs here shares: the suite's database and clock, 30-day retention run hourly. */
  function jobsOptions(mongoUrl: string) {
    return {
      mongoUrl,
      db: mongo.db!,
      clock,
      log: pino({ level: 'silent' }),
      config: {
        telemetryRetentionDays: 30,
        deadLetterRetentionDays: 30,
        retentionIntervalMinutes: 60,
        pollIntervalMs: 100,
      },
    };
  }

  /** Buckets starting `ageDays` before now (and a dead letter received then), named by their age. */
  async function seed(ages: readonly number[]) {
    await mongo.db!.collection(TELEMETRY_COLLECTION).deleteMany({});
    await mongo.db!.collection(DEAD_LETTER_COLLECTION).deleteMany({});
    for (const age of ages) {
      const start = NOW - age * DAY_MS;
      await mongo.db!.collection(TELEMETRY_COLLECTION).insertOne({
        _id: `demo:row-03:${start}` as never,
        branch: 'demo',
        machine: 'row-03',
        start: new Date(start),
        end: new Date(start + TELEMETRY_BUCKET_MS),
        samples: {},
      });
      await mongo
        .db!.collection(DEAD_LETTER_COLLECTION)
        .insertOne({ _id: `gw:b:${age}` as never, receivedAt: new Date(start) });
    }
  }

  const remaining = async () => ({
    buckets: (await mongo.db!.collection(TELEMETRY_COLLECTION).find().sort({ start: 1 }).toArray()).map((d) =>
      Math.round((NOW - (d.start as Date).getTime()) / DAY_MS),
    ),
    letters: (await mongo.db!.collection(DEAD_LETTER_COLLECTION).find().toArray())
      .map((d) => d._id as unknown as string)
      .sort(),
  });

  it('deletes buckets whose minute lies wholly past the horizon and dead letters older than theirs, by the injected clock', async () => {
    await seed([60, 31, 30, 29, 1]);
    const result = await runRetention({
      db: mongo.db!,
      clock,
      settings: { telemetryRetentionDays: 30, deadLetterRetentionDays: 7 },
    });
    // The 30-day-old bucket starts exactly at the horizon: its minute is not over yet, so it stays.
    expect(result).to.include({ telemetryBuckets: 2, deadLetters: 4 });
    expect(await remaining()).to.deep.equal({ buckets: [30, 29, 1], letters: ['gw:b:1'] });
    // Time moves on (no fake timers: the driver keeps its own): the next run takes what aged meanwhile.
    clock.advance(DAY_MS);
    const later = await runRetention({
      db: mongo.db!,
      clock,
      settings: { telemetryRetentionDays: 30, deadLetterRetentionDays: 7 },
    });
    expect(later).to.include({ telemetryBuckets: 1, deadLetters: 0 });
    clock.set(NOW);
  });

  describe('through agenda', () => {
    let jobs: Jobs;
    before(async () => {
      jobs = await startJobs({
        ...jobsOptions(`${testServices().mongoUrl}/${dbName}`),
        connectTimeoutMs: 2_000,
        // Short: agenda's lock watchdog re-arms a (referenced) timer of half of it while a run lasts longer.
        lockLifetimeMs: 2_000,
      });
    });
    after(() => jobs?.stop());

    it('schedules the retention job every interval in its own collection, and runs it', async () => {
      const scheduled = await mongo.db!.collection(JOBS_COLLECTION).findOne({ name: RETENTION_JOB, type: 'single' });
      expect(scheduled).to.include({ repeatInterval: 60 * 60_000 });
      // The first run is one interval after start.
      expect((scheduled!.nextRunAt as Date).getTime()).to.be.greaterThan(Date.now() + 50 * 60_000);

      // A restart keeps the schedule it finds instead of pushing the next run back by an interval.
      const restarted = await startJobs({
        ...jobsOptions(`${testServices().mongoUrl}/${dbName}`),
        connectTimeoutMs: 2_000,
      });
      await restarted.stop();
      const after = await mongo.db!.collection(JOBS_COLLECTION).find({ name: RETENTION_JOB }).toArray();
      expect(after).to.have.length(1);
      expect((after[0]!.nextRunAt as Date).getTime()).to.equal((scheduled!.nextRunAt as Date).getTime());

      await seed([45, 40, 2]);
      const result = await jobs.runRetentionNow();
      expect(result).to.include({ telemetryBuckets: 2, deadLetters: 2 });
      expect(await remaining()).to.deep.equal({ buckets: [2], letters: ['gw:b:2'] });
    });

    it("schedules another domain's repeating job, runs it, and keeps going after a failed run", async () => {
      let runs = 0;
      await jobs.repeat('test:repeat', 15, () => {
        runs += 1;
        return runs === 1 ? Promise.reject(new Error('dependency down')) : Promise.resolve();
      });
      const scheduled = await mongo.db!.collection(JOBS_COLLECTION).findOne({ name: 'test:repeat', type: 'single' });
      expect(scheduled).to.include({ repeatInterval: 15 * 60_000 });
      for (const outcome of ['fail', 'success']) {
        const done = new Promise((resolve) => jobs.agenda.once(`${outcome}:test:repeat`, resolve));
        await jobs.agenda.now('test:repeat');
        await done;
      }
      expect(runs).to.equal(2);
    });
  });

  it("leaves no timer of agenda's that keeps the process alive after a run and stop() (default lock lifetime)", async () => {
    // Every timer agenda's JobProcessor arms while this test runs, with where it was armed.
    const armed: { timer: NodeJS.Timeout; stack: string }[] = [];
    const hook = createHook({
      init(_id, type, _trigger, resource) {
        if (type !== 'Timeout') return;
        const limit = Error.stackTraceLimit;
        Error.stackTraceLimit = 30;
        const stack = new Error().stack ?? '';
        Error.stackTraceLimit = limit;
        if (stack.includes('agenda/dist/JobProcessor.js')) armed.push({ timer: resource as NodeJS.Timeout, stack });
      },
    });
    // Agenda's collection in a database of its own: the schedule checks below expect one retention job.
    const agendaDb = uniqueDbName('jobs-timers');
    let jobs: Jobs | undefined;
    hook.enable();
    try {
      jobs = await startJobs({ ...jobsOptions(`${testServices().mongoUrl}/${agendaDb}`), connectTimeoutMs: 2_000 });
      await jobs.runRetentionNow();
    } finally {
      hook.disable();
      await jobs?.stop();
      await mongo.getClient().db(agendaDb).dropDatabase();
    }
    // The run armed its lock watchdog (5 minutes here), which agenda 6.2.6 never clears.
    const watchdogs = armed.filter((a) => a.stack.includes('checkIfJobIsStillAlive'));
    expect(watchdogs, 'no lock watchdog seen: did agenda change?').to.have.length.greaterThan(0);
    expect(watchdogs.filter((a) => a.timer.hasRef()).map((a) => a.stack)).to.deep.equal([]);
  });

  it('fails to start with a clear error, and no unhandled rejection, when MongoDB cannot be reached', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      let error: unknown;
      try {
        await startJobs({
          // A port nothing listens on (the discard port, closed on loopback).
          ...jobsOptions('mongodb://127.0.0.1:9/nowhere'),
          connectTimeoutMs: 300,
        });
      } catch (err) {
        error = err;
      }
      expect((error as Error | undefined)?.name).to.match(/Mongo/);
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(unhandled).to.deep.equal([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });
});
