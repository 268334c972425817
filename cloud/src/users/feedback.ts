/**
 * Feedback from the app (bugs, ideas, praise): stored with the member's id so it can be answered, exported and
 * erased with the rest of their data.
 */
import { Types } from 'mongoose';
import type { UsersContext } from './context.ts';
import type { FeedbackDoc } from './models.ts';
import type { FeedbackSubmission } from './schemas.ts';

export interface FeedbackView {
  id: string;
  category: string;
  message: string;
  rating: number | null;
  appVersion: string | null;
  platform: string | null;
  createdAt: string;
}

export interface FeedbackService {
  submit(userId: string, input: FeedbackSubmission): Promise<FeedbackView>;
  list(userId: string, limit: number): Promise<FeedbackView[]>;
}

function view(doc: FeedbackDoc): FeedbackView {
  return {
    id: doc._id.toHexString(),
    category: doc.category,
    message: doc.message,
    rating: doc.rating,
    appVersion: doc.appVersion,
    platform: doc.platform,
    createdAt: doc.createdAt.toISOString(),
  };
}

export function createFeedbackService({ models, clock }: UsersContext): FeedbackService {
  const { Feedback } = models;
  return {
    async submit(userId, input) {
      const doc: FeedbackDoc = {
        _id: new Types.ObjectId(),
        userId,
        category: input.category,
        message: input.message,
        rating: input.rating ?? null,
        appVersion: input.appVersion ?? null,
        platform: input.platform ?? null,
        createdAt: clock.now(),
      };
      await Feedback.create(doc);
      return view(doc);
    },
    async list(userId, limit) {
      const docs = await Feedback.find({ userId }).sort({ createdAt: -1, _id: -1 }).limit(limit).lean();
      return docs.map(view);
    },
  };
}
