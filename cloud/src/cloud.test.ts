import { expect } from 'chai';
import { Schema } from 'mongoose';
import { pino } from 'pino';
import { systemClock } from '../../tools/runtime/clock.ts';
import { findFreePort, startRedis, type RunningService } from '../../tools/services/index.ts';
import { testServices, uniqueDbName } from '../../test/helpers/services.ts';
import { PENDING_DELETIONS_JOB, startCloud, type RunningCloud } from './cloud.ts';
import { JOBS_COLLECTION } from './jobs/jobs.ts';
import { loadCloudConfig } from './config.ts';

const silent = pino({ level: 'silent' });

function configFor(mongoUrl: string, redisUrl: string) {
  return loadCloudConfig({
    MONGO_URL: mongoUrl,
    REDIS_URL: redisUrl,
    HTTP_PORT: '0',
    MQTT_TCP_PORT: '0',
    MQTT_TLS_PORT: '0',
    SHUTDOWN_GRACE_MS: '3000',
    MONGO_TIMEOUT_MS: '1500',
  });
}

interface HealthBody {
  status: string;
  checks: Record<string, { status: string; latencyMs: number; error?: string }>;
  version: string;
}

describe('cloud process (real MongoDB-compatible server and Redis)', function () {
  this.timeout(30_000);

  describe('with healthy dependencies', () => {
    let cloud: RunningCloud;

    before(async () => {
      const { mongoUrl, redisUrl } = testServices();
      cloud = await startCloud({
        config: configFor(`${mongoUrl}/${uniqueDbName('cloud')}`, redisUrl),
        log: silent,
        clock: systemClock,
      });
    });
    after(() => cloud.stop());

    it('reports MongoDB and Redis up, with latency, on GET /health', async () => {
      const res = await fetch(`${cloud.url}/health`);
      expect(res.status).to.equal(200);
      expect(res.headers.get('cache-control')).to.equal('no-store');
      const body = (await res.json()) as HealthBody;
      expect(body.status).to.equal('ok');
      expect(body.checks.mongo).to.include({ status: 'up' });
      expect(body.checks.redis).to.include({ status: 'up' });
      expect(body.checks.mongo!.latencyMs).to.be.a('number').and.be.at.least(0);
    });

    it('schedules the job that finishes pending GDPR deletions', async () => {
      const job = await cloud.mongo.collection(JOBS_COLLECTION).findOne({ name: PENDING_DELETIONS_JOB });
      expect(job).to.include({ repeatInterval: 15 * 60_000 });
    });

    it('really writes to MongoDB and Redis through its connections', async () => {
      const things = cloud.mongo.collection('health_probe_things');
      await things.insertOne({ _id: 'probe' as never, at: new Date() });
      expect(await things.countDocuments()).to.equal(1);
      await cloud.redis.set('nxg:test:probe', '1', 'EX', 10);
      expect(await cloud.redis.get('nxg:test:probe')).to.equal('1');
      await cloud.redis.del('nxg:test:probe');
    });

    it('refuses queries on unknown paths and $-operators from values (strictQuery, sanitizeFilter)', async () => {
      const Probe = cloud.mongo.model('StrictProbe', new Schema({ email: String }));
      await Probe.create({ email: 'a@nxg.test' });
      let strictError: unknown;
      try {
        await Probe.find({ emial: 'a@nxg.test' }).lean();
      } catch (err) {
        strictError = err;
      }
      expect((strictError as Error | undefined)?.name).to.equal('StrictModeError');
      let sanitizeError: unknown;
      try {
        await Probe.find({ email: { $ne: null } }).lean();
      } catch (err) {
        sanitizeError = err;
      }
      expect(sanitizeError, 'a $ne from input must not run').to.be.instanceOf(Error);
    });

    it('answers the API index and exposes default process metrics', async () => {
      const api = (await (await fetch(`${cloud.url}/api`)).json()) as Record<string, string>;
      expect(api).to.include({ name: 'NXG Connect', protocol: 'nxg/v1', docs: '/api/docs' });
      const metrics = await (await fetch(`${cloud.url}/metrics`)).text();
      expect(metrics).to.include('process_cpu_user_seconds_total');
      expect(metrics).to.include('nodejs_eventloop_lag_seconds');
    });
  });

  describe('when Redis goes away', () => {
    let cloud: RunningCloud;
    let redis: RunningService;

    before(async () => {
      redis = await startRedis({});
      cloud = await startCloud({
        config: configFor(`${testServices().mongoUrl}/${uniqueDbName('cloud-redis-down')}`, redis.url),
        log: silent,
        clock: systemClock,
      });
    });
    after(async () => {
      await cloud.stop();
      await redis.stop();
    });

    it('reports redis down with 503 within a second, while MongoDB stays up', async () => {
      expect((await fetch(`${cloud.url}/health`)).status).to.equal(200);
      await redis.stop();
      const started = Date.now();
      const res = await fetch(`${cloud.url}/health`);
      const elapsed = Date.now() - started;
      expect(res.status).to.equal(503);
      const body = (await res.json()) as HealthBody;
      expect(body.status).to.equal('down');
      expect(body.checks.redis!.status).to.equal('down');
      expect(body.checks.mongo!.status).to.equal('up');
      // The strict figure (RELIABILITY C3: ≤ 1 s) belongs in a benchmark; 3× here.
      expect(elapsed).to.be.below(3000);
    });
  });

  describe('a failed start', () => {
    it('closes what it had opened: no MongoDB socket or Redis reconnect timer left behind', async () => {
      // Sockets and timers (a reconnecting client keeps both) must be back to what they were.
      const countHandles = () =>
        process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap' || r === 'Timeout').length;
      const deadRedis = `redis://127.0.0.1:${await findFreePort()}`;
      // Counted after the first await: mocha arms this test's own timeout timer only once the test returns a promise.
      const before = countHandles();
      let failure: unknown;
      try {
        await startCloud({
          config: configFor(`${testServices().mongoUrl}/${uniqueDbName('cloud-fail')}`, deadRedis),
          log: silent,
          clock: systemClock,
        });
      } catch (err) {
        failure = err;
      }
      expect(failure).to.be.instanceOf(Error);
      // The driver's close finishes its own short timers; a leaked client would reconnect forever.
      const until = Date.now() + 5000;
      while (countHandles() > before && Date.now() < until) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        await new Promise((resolve) => setImmediate(resolve)); // let that timer itself be released before counting
      }
      expect(countHandles(), process.getActiveResourcesInfo().join()).to.be.at.most(before);
    });
  });

  describe('graceful shutdown', () => {
    it('keeps answering during the drain delay, with /health at 503 so balancers move away', async () => {
      const { mongoUrl, redisUrl } = testServices();
      const config = configFor(`${mongoUrl}/${uniqueDbName('cloud-drain')}`, redisUrl);
      config.http.shutdownDrainDelayMs = 400;
      const cloud = await startCloud({ config, log: silent, clock: systemClock });
      const stopped = cloud.stop();
      const res = await fetch(`${cloud.url}/health`);
      expect(res.status).to.equal(503);
      expect(((await res.json()) as HealthBody).status).to.equal('shutting-down');
      expect((await fetch(`${cloud.url}/health/live`)).status).to.equal(200);
      await stopped;
    });

    it('finishes an in-flight request, then refuses new connections and closes its clients', async () => {
      const { mongoUrl, redisUrl } = testServices();
      const cloud = await startCloud({
        config: configFor(`${mongoUrl}/${uniqueDbName('cloud-stop')}`, redisUrl),
        log: silent,
        clock: systemClock,
      });
      // Hold a request in flight: a health check that takes 400 ms.
      cloud.health.add({ name: 'slow-probe', check: () => new Promise((resolve) => setTimeout(resolve, 400)) });
      const inFlight = fetch(`${cloud.url}/health`);
      await new Promise((resolve) => setTimeout(resolve, 150));
      const stopped = cloud.stop();
      const res = await inFlight;
      // It was answered, not cut — and it says the node is going away, so a balancer stops routing here.
      expect(res.status).to.equal(503);
      expect(((await res.json()) as HealthBody).status).to.equal('shutting-down');
      await stopped;
      let refused = false;
      try {
        await fetch(`${cloud.url}/health/live`);
      } catch {
        refused = true;
      }
      expect(refused).to.equal(true);
      expect(cloud.redis.status).to.equal('end');
      expect(cloud.mongo.readyState).to.equal(0);
    });
  });
});
