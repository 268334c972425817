/**
 * End to end: a short scenario with a few hundred machines against a real cloud and edge gateway (processes, over
 * loopback), in one and in two simulator processes, and its report checked against MongoDB read independently.
 */
import { expect } from 'chai';
import { MongoClient } from 'mongodb';
import { pino } from 'pino';
import { testServices, uniqueDbName } from '../../test/helpers/services.ts';
import { RECORD_COLLECTIONS, TELEMETRY_BUCKETS } from './report/persisted.ts';
import type { RunReport } from './report/report.ts';
import { runScenario } from './run.ts';
import { DEFAULT_SETTINGS, loadScenario, type Scenario } from './scenario.ts';

async function storedInDb(database: string): Promise<{ records: number; samples: number }> {
  const client = await MongoClient.connect(`${testServices().mongoUrl}/${database}`);
  try {
    const db = client.db();
    let records = 0;
    // Last wills are published by the gateway on a machine's behalf (a connection cut): not the simulator's records.
    for (const collection of Object.values(RECORD_COLLECTIONS))
      records += (
        await db
          .collection(collection)
          .find({ lastWill: { $ne: true } }, { projection: { _id: 1 } })
          .toArray()
      ).length;
    let samples = 0;
    for await (const doc of db
      .collection<{ samples?: object }>(TELEMETRY_BUCKETS)
      .find({}, { projection: { samples: 1 } }))
      samples += Object.keys(doc.samples ?? {}).length;
    await db.dropDatabase();
    return { records, samples };
  } finally {
    await client.close();
  }
}

describe('simulator scenario, end to end (cloud + gateway processes)', function () {
  this.timeout(180_000);

  // Two processes: the coordinator's split and merge, on top of everything a single process does.
  for (const processes of [2]) {
    it(`steady with 200 machines for 5 s in ${processes} process(es): nothing lost, report = MongoDB`, async function () {
      const { mongoUrl, redisUrl } = testServices();
      const database = uniqueDbName('sim_e2e');
      const scenario = await loadScenario('steady');
      const report: RunReport = await runScenario({
        scenario,
        settings: {
          ...DEFAULT_SETTINGS,
          ...scenario.settings,
          machines: 200,
          durationS: 5,
          rate: 2,
          telemetryQos: 1,
          timeScale: 60,
          drainS: 60,
        },
        seed: 42,
        processes,
        target: { kind: 'own', mongoUrl, redisUrl, database },
        log: pino({ level: 'silent' }),
      });
      // Latency is reported, not asserted (a shared CI machine sets it): every other check must pass.
      const failed = report.checks.filter((c) => !c.ok && !c.name.startsWith('PUBACK latency'));
      expect(failed, JSON.stringify(failed)).to.deep.equal([]);
      expect(report.processes).to.equal(processes);
      expect(report.machines).to.equal(200);
      expect(report.counts.connectedAtEnd).to.equal(200);
      const p = report.persisted!;
      expect(report.lost).to.equal(0);
      expect(p.records.acked).to.be.greaterThan(400); // meta + status on connect, offline at the end
      expect(p.telemetry.acked).to.be.greaterThan(1000);
      // The report's read-back against the database read independently: the run's database holds exactly what
      // the report says was stored.
      const stored = await storedInDb(database);
      expect(stored.records).to.equal(p.records.persisted);
      expect(stored.samples).to.equal(p.telemetry.persisted);
      // Every acknowledgement is timed, but the offline statuses at the very end.
      expect(report.latencyUs.count).to.be.within(report.counts.acked - 200, report.counts.acked);
      expect(report.series.length).to.be.greaterThan(3);
    });
  }

  // QoS 0 telemetry is not acknowledged, so nothing "outstanding" says whether it is still on its way: the wait for
  // MongoDB lasts until the gateway's uplink queue is empty. (It used to end with the acknowledged records, while
  // the gateway still held most of the samples: rush-hour reported 38 % of them stored.)
  it('QoS 0 telemetry: the wait lasts until the gateway has forwarded everything, then every sample is stored', async function () {
    const { mongoUrl, redisUrl } = testServices();
    const database = uniqueDbName('sim_qos0');
    const scenario = await loadScenario('steady');
    const report = await runScenario({
      scenario,
      settings: {
        ...DEFAULT_SETTINGS,
        ...scenario.settings,
        machines: 150,
        durationS: 5,
        rate: 4,
        telemetryQos: 0,
        drainS: 90,
      },
      seed: 7,
      processes: 1,
      target: { kind: 'own', mongoUrl, redisUrl, database },
      log: pino({ level: 'silent' }),
    });
    expect(report.drain?.queuedAtEnd, JSON.stringify(report.drain)).to.equal(0);
    const t = report.persisted!.telemetry;
    expect(t.acked).to.equal(0);
    expect(t.sent).to.be.greaterThan(150 * 4 * 3);
    // Loopback, no disconnects, an empty queue at the end: every sample the machines sent is stored.
    expect(t.persisted).to.equal(t.sent);
    expect(report.lost).to.equal(0);
    const stored = await storedInDb(database);
    expect(stored.samples).to.equal(t.persisted);
  });

  it('scenario events are timed from the connected fleet, not from the start of the connect phase', async function () {
    const { mongoUrl, redisUrl } = testServices();
    const scenario: Scenario = {
      name: 'outage-timing',
      description: 'a gateway killed 1 s into the run and started 1 s later',
      needs: 'gateways',
      events: () => [
        { atS: 1, action: 'kill-gateway' },
        { atS: 2, action: 'start-gateway' },
      ],
      checks: () => [],
    };
    const report = await runScenario({
      scenario,
      // 80 machines at 40 connects/s: the connect phase alone lasts about 2 s, longer than the first event's time.
      settings: { ...DEFAULT_SETTINGS, machines: 80, connectRate: 40, durationS: 4, drainS: 30 },
      seed: 3,
      processes: 1,
      target: { kind: 'own', mongoUrl, redisUrl, database: uniqueDbName('sim_events') },
      log: pino({ level: 'silent' }),
    });
    const at = (what: string) => report.events.find((e) => e.what.startsWith(what))?.t;
    const connected = at('fleet connected');
    expect(connected, JSON.stringify(report.events)).to.be.a('number');
    expect(connected).to.be.greaterThan(1.5); // 80 connects at 40/s
    // Node timers may fire a fraction of a millisecond before the clock the report reads says they are due.
    const TIMER_SLACK_S = 0.01;
    expect(at('kill-gateway')).to.be.at.least(connected! + 1 - TIMER_SLACK_S);
    expect(at('start-gateway')).to.be.at.least(connected! + 2 - TIMER_SLACK_S);
    expect(report.events.map((e) => e.what).filter((w) => w.includes('FAILED'))).to.deep.equal([]);
  });
});
