/**
 * Branches (gym sites): name, IANA time zone and weekly opening hours, plus the staff assigned to each. An admin is
 * global; a staff account manages only the branches it is assigned to (`canManage`). Other domains read a branch
 * with `get(id)` and ask the pure helpers in hours.ts (`isOpenAt`, `closingAfter`) about its hours.
 *
 * Staff assignments are documents keyed by (user, branch), so assigning twice is one assignment however requests race.
 */
import { Schema, trusted, type Connection, type Model } from 'mongoose';
import type { Clock } from '../../../tools/runtime/clock.ts';
import type { AuditLog } from '../audit/index.ts';
import { isDuplicateKey } from '../db/mongo.ts';
import { Conflict, Forbidden, Invalid, NotFound } from '../http/errors.ts';
import type { AuthenticatedUser } from '../http/state.ts';
import { WEEKDAYS, isValidTimeZone, openingHoursProblems, type OpeningHours } from './hours.ts';

export interface Branch {
  id: string;
  name: string;
  timeZone: string;
  openingHours: OpeningHours;
}

export interface BranchView extends Branch {
  createdAt: string;
  updatedAt: string;
}

interface BranchDoc {
  _id: string;
  name: string;
  timeZone: string;
  openingHours: OpeningHours;
  createdAt: Date;
  updatedAt: Date;
}

interface StaffDoc {
  _id: string;
  userId: string;
  branchId: string;
  assignedAt: Date;
  assignedBy: string;
}

const IntervalSchema = new Schema({ open: String, close: String }, { _id: false });
const HoursSchema = new Schema(Object.fromEntries(WEEKDAYS.map((d) => [d, { type: [IntervalSchema], default: [] }])), {
  _id: false,
});

const BranchSchema = new Schema<BranchDoc>(
  {
    _id: { type: String, required: true },
    name: { type: String, required: true },
    timeZone: { type: String, required: true },
    openingHours: { type: HoursSchema, required: true },
    createdAt: { type: Date, required: true },
    updatedAt: { type: Date, required: true },
  },
  { collection: 'branches', versionKey: false, strict: 'throw' },
);

const StaffSchema = new Schema<StaffDoc>(
  {
    _id: { type: String, required: true },
    userId: { type: String, required: true, index: true },
    branchId: { type: String, required: true, index: true },
    assignedAt: { type: Date, required: true },
    assignedBy: { type: String, required: true },
  },
  { collection: 'branch_staff', versionKey: false, strict: 'throw' },
);

export interface BranchInput {
  name: string;
  timeZone: string;
  openingHours: OpeningHours;
}

export interface BranchesService {
  /** The branch, or undefined. */
  get(id: string): Promise<Branch | undefined>;
  view(id: string): Promise<BranchView>;
  /** Every branch, or those with the given ids. */
  list(ids?: readonly string[]): Promise<BranchView[]>;
  create(actor: string, id: string, input: BranchInput): Promise<BranchView>;
  update(actor: string, id: string, input: Partial<BranchInput>): Promise<BranchView>;
  remove(actor: string, id: string): Promise<void>;
  /** Whether `user` may manage `branchId`: admins everywhere, staff where assigned. */
  canManage(user: Pick<AuthenticatedUser, 'id' | 'role'>, branchId: string): Promise<boolean>;
  /** Throws 403 unless canManage (404 first when the branch does not exist). */
  assertManages(user: Pick<AuthenticatedUser, 'id' | 'role'>, branchId: string): Promise<Branch>;
  staff: {
    assign(actor: string, userId: string, branchId: string): Promise<{ created: boolean }>;
    unassign(actor: string, userId: string, branchId: string): Promise<boolean>;
    /** The branch ids a staff account is assigned to. */
    branchesOf(userId: string): Promise<string[]>;
    /** The staff accounts of a branch. */
    of(branchId: string): Promise<{ userId: string; assignedAt: string }[]>;
  };
}

export async function createBranches({
  mongo,
  clock,
  audit,
}: {
  mongo: Connection;
  clock: Clock;
  audit: AuditLog;
}): Promise<BranchesService> {
  const BranchModel = (mongo.models.Branch ?? mongo.model('Branch', BranchSchema)) as Model<BranchDoc>;
  const Staff = (mongo.models.BranchStaff ?? mongo.model('BranchStaff', StaffSchema)) as Model<StaffDoc>;
  await Promise.all([BranchModel.init(), Staff.init()]);

  const toBranch = (d: BranchDoc): Branch => ({
    id: d._id,
    name: d.name,
    timeZone: d.timeZone,
    openingHours: normaliseHours(d.openingHours),
  });
  const toView = (d: BranchDoc): BranchView => ({
    ...toBranch(d),
    createdAt: d.createdAt.toISOString(),
    updatedAt: d.updatedAt.toISOString(),
  });
  const check = (input: Partial<BranchInput>) => {
    const problems: { in: 'body'; field: string; reason: string }[] = [];
    if (input.timeZone !== undefined && !isValidTimeZone(input.timeZone)) {
      problems.push({ in: 'body', field: 'timeZone', reason: 'not an IANA time zone name this server knows' });
    }
    if (input.openingHours) {
      for (const p of openingHoursProblems(input.openingHours)) {
        problems.push({ in: 'body', field: 'openingHours', reason: p });
      }
    }
    if (problems.length > 0) throw new Invalid(problems);
  };
  const record = (actor: string, action: string, target: string, details: Record<string, unknown> = {}) =>
    audit.record({ actor, action, target, ip: null, result: 'success', details });

  const service: BranchesService = {
    async get(id) {
      const doc = await BranchModel.findById(String(id)).lean<BranchDoc>();
      return doc ? toBranch(doc) : undefined;
    },
    async view(id) {
      const doc = await BranchModel.findById(String(id)).lean<BranchDoc>();
      if (!doc) throw new NotFound('no such branch');
      return toView(doc);
    },
    async list(ids) {
      const filter = ids ? { _id: trusted({ $in: ids.map(String) }) } : {};
      const docs = await BranchModel.find(filter).sort({ _id: 1 }).lean<BranchDoc[]>();
      return docs.map(toView);
    },
    async create(actor, id, input) {
      check(input);
      const now = clock.now();
      try {
        const doc = await BranchModel.create({ _id: id, ...input, createdAt: now, updatedAt: now });
        await record(actor, 'branch_created', `branch:${id}`);
        return toView(doc.toObject());
      } catch (err) {
        if (isDuplicateKey(err)) throw new Conflict('branch-exists', `a branch ${id} exists`);
        throw err;
      }
    },
    async update(actor, id, input) {
      check(input);
      const set: Record<string, unknown> = { updatedAt: clock.now() };
      if (input.name !== undefined) set.name = input.name;
      if (input.timeZone !== undefined) set.timeZone = input.timeZone;
      if (input.openingHours !== undefined) set.openingHours = input.openingHours;
      const doc = await BranchModel.findOneAndUpdate(
        { _id: String(id) },
        { $set: set },
        { returnDocument: 'after' },
      ).lean<BranchDoc>();
      if (!doc) throw new NotFound('no such branch');
      await record(actor, 'branch_updated', `branch:${id}`, { fields: Object.keys(input) });
      return toView(doc);
    },
    async remove(actor, id) {
      const res = await BranchModel.deleteOne({ _id: String(id) });
      if (res.deletedCount !== 1) throw new NotFound('no such branch');
      await Staff.deleteMany({ branchId: String(id) });
      await record(actor, 'branch_deleted', `branch:${id}`);
    },
    async canManage(user, branchId) {
      if (user.role === 'admin') return true;
      if (user.role !== 'staff') return false;
      return (await Staff.exists({ _id: `${user.id}:${branchId}` })) !== null;
    },
    async assertManages(user, branchId) {
      const branch = await service.get(branchId);
      if (!branch) throw new NotFound('no such branch');
      if (!(await service.canManage(user, branchId))) throw new Forbidden('you do not manage this branch');
      return branch;
    },
    staff: {
      async assign(actor, userId, branchId) {
        if (!(await BranchModel.exists({ _id: branchId }))) throw new NotFound('no such branch');
        try {
          await Staff.create({
            _id: `${userId}:${branchId}`,
            userId,
            branchId,
            assignedAt: clock.now(),
            assignedBy: actor,
          });
        } catch (err) {
          if (isDuplicateKey(err)) return { created: false };
          throw err;
        }
        await record(actor, 'branch_staff_assigned', `branch:${branchId}`, { userId });
        return { created: true };
      },
      async unassign(actor, userId, branchId) {
        const res = await Staff.deleteOne({ _id: `${userId}:${branchId}` });
        if (res.deletedCount === 1) await record(actor, 'branch_staff_removed', `branch:${branchId}`, { userId });
        return res.deletedCount === 1;
      },
      async branchesOf(userId) {
        const docs = await Staff.find({ userId: String(userId) }, { branchId: 1 }).lean<StaffDoc[]>();
        return docs.map((d) => d.branchId);
      },
      async of(branchId) {
        const docs = await Staff.find({ branchId: String(branchId) })
          .sort({ assignedAt: 1 })
          .lean<StaffDoc[]>();
        return docs.map((d) => ({ userId: d.userId, assignedAt: d.assignedAt.toISOString() }));
      },
    },
  };
  return service;
}

/** Every weekday present (older documents or partial updates may lack one), intervals as plain objects. */
function normaliseHours(hours: Partial<OpeningHours> | undefined): OpeningHours {
  return Object.fromEntries(
    WEEKDAYS.map((d) => [d, (hours?.[d] ?? []).map((i) => ({ open: i.open, close: i.close }))]),
  ) as OpeningHours;
}
