/**
 * Access routes: a member's QR token and own cards (`/api/access/qr-token`, `/api/access/cards…`), and card
 * enrolment by staff of a branch the member belongs to. A member naming someone else's card gets 404 (and an audit
 * entry), never 403: the card's existence is not theirs to learn.
 */
import type { Middleware } from 'koa';
import * as v from 'valibot';
import { BranchId, UserId } from '../../../protocol/ids.ts';
import { NfcUid } from '../../../protocol/messages/access.ts';
import type { AuditLog } from '../audit/index.ts';
import type { RequireUserOptions } from '../auth/guard.ts';
import type { BranchesService } from '../branches/service.ts';
import { NotFound } from '../http/errors.ts';
import { defineRoute, type RouteSpec } from '../http/route.ts';
import type { AppState } from '../http/state.ts';
import { caller } from '../users/routes.ts';
import type { CardStore } from './cards.ts';

const security = [{ bearer: [] }];
const tags = ['access'];

const CardView = v.object({
  id: v.string(),
  last4: v.string(),
  label: v.nullable(v.string()),
  blocked: v.boolean(),
  blockedAt: v.nullable(v.string()),
  enrolledAt: v.string(),
});
const CardIdParam = v.strictObject({ cardId: v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]{16}$/, 'not a card id')) });
const CardEnrolment = v.strictObject({
  userId: UserId,
  branch: BranchId,
  uid: v.pipe(
    v.string(),
    v.transform((s) => s.toLowerCase()),
    NfcUid,
  ),
  label: v.optional(v.pipe(v.string(), v.trim(), v.minLength(1), v.maxLength(40))),
});

export function accessRoutes(deps: {
  requireUser: (options?: RequireUserOptions) => Middleware<AppState>;
  branches: BranchesService;
  memberships: { list(userId: string): Promise<{ branchId: string }[]> };
  cards: CardStore;
  audit: AuditLog;
  issueQrToken(userId: string): { token: string; expiresAtMs: number };
  limitQr(userId: string): Promise<void>;
  /** Card changes (enrol, block) per account: each one rebuilds allow-lists. */
  limitCards(userId: string): Promise<void>;
  onCardsChanged(userId: string): Promise<void>;
}): RouteSpec[] {
  const { requireUser, branches, memberships, cards, audit } = deps;
  const member = requireUser();
  const verifiedMember = requireUser({ verified: true });
  const staff = requireUser({ roles: ['staff', 'admin'] });
  return [
    defineRoute({
      method: 'get',
      path: '/api/access/qr-token',
      summary: 'A short-lived QR token to check in with (ES256, valid ≤ 60 s, single use)',
      description: 'Rate-limited per member. Gateways verify it offline with the key in their signed configuration.',
      tags,
      security,
      guards: [verifiedMember],
      responses: {
        200: {
          description: 'The token',
          schema: v.object({ token: v.string(), expiresAt: v.string() }),
        },
        403: { description: 'Suspended account, or email not verified' },
        429: { description: 'Too many tokens requested' },
      },
      handler: async (ctx) => {
        const user = caller(ctx);
        await deps.limitQr(user.id);
        const { token, expiresAtMs } = deps.issueQrToken(user.id);
        return {
          status: 200,
          body: { token, expiresAt: new Date(expiresAtMs).toISOString() },
          headers: { 'Cache-Control': 'no-store' },
        };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/api/access/cards',
      summary: 'The member’s NFC cards (last four digits only)',
      tags,
      security,
      guards: [member],
      responses: {
        200: { description: 'Cards', schema: v.object({ items: v.array(CardView) }) },
        403: { description: 'Suspended account' },
      },
      handler: async (ctx) => ({ status: 200, body: { items: await cards.list(caller(ctx).id) } }),
    }),
    defineRoute({
      method: 'post',
      path: '/api/access/cards/:cardId/block',
      summary: 'Block one of the member’s own cards (lost or stolen); gateways drop it within a minute',
      tags,
      security,
      guards: [member],
      params: CardIdParam,
      responses: {
        200: { description: 'Blocked', schema: CardView },
        403: { description: 'Suspended account' },
        404: { description: 'No such card' },
        429: { description: 'Too many card changes' },
      },
      handler: async (ctx, { params }) => {
        const user = caller(ctx);
        await deps.limitCards(user.id);
        let blocked;
        try {
          blocked = await cards.block(user.id, params.cardId);
        } catch (err) {
          if (err instanceof NotFound) {
            await audit
              .record({
                actor: user.id,
                action: 'access_denied',
                target: `card:${params.cardId}`,
                ip: ctx.ip,
                result: 'refused',
                details: { method: ctx.method, route: ctx.path, reason: 'not the owner' },
              })
              .catch((e: unknown) => ctx.state.log.warn({ err: e }, 'audit entry not written'));
          }
          throw err;
        }
        const { card, changed } = blocked;
        if (!changed) return { status: 200, body: card }; // blocked before: audited and pushed then
        await audit.record({
          actor: user.id,
          action: 'card_blocked',
          target: `card:${card.id}`,
          ip: ctx.ip,
          result: 'success',
          details: { last4: card.last4 },
        });
        await deps.onCardsChanged(user.id);
        return { status: 200, body: card };
      },
    }),
    defineRoute({
      method: 'post',
      path: '/api/access/cards',
      summary: 'Enrol an NFC card to a member of a branch the caller manages (staff, admin)',
      description: 'The UID is stored as its SHA-256 and the last four digits only.',
      tags,
      security,
      guards: [staff],
      body: CardEnrolment,
      responses: {
        201: { description: 'Enrolled', schema: v.object({ ...CardView.entries, userId: v.string() }) },
        403: { description: 'Not staff of that branch' },
        404: { description: 'No such branch, or the user is not a member of it' },
        409: { description: 'Card already enrolled, or the member holds the most cards allowed' },
        429: { description: 'Too many card changes' },
      },
      handler: async (ctx, { body }) => {
        const user = caller(ctx);
        await branches.assertManages(user, body.branch);
        await deps.limitCards(user.id);
        const memberOf = await memberships.list(body.userId);
        if (!memberOf.some((m) => m.branchId === body.branch)) throw new NotFound('no such member of this branch');
        const card = await cards.enrol({
          userId: body.userId,
          uid: body.uid,
          by: user.id,
          ...(body.label ? { label: body.label } : {}),
        });
        await audit.record({
          actor: user.id,
          action: 'card_enrolled',
          target: `card:${card.id}`,
          ip: ctx.ip,
          result: 'success',
          details: { userId: body.userId, branch: body.branch, last4: card.last4 },
        });
        await deps.onCardsChanged(body.userId);
        return { status: 201, body: { ...card, userId: body.userId } };
      },
    }),
  ];
}
